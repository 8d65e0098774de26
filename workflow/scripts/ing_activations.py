from stages_of_inference.casestudies.rules import ing_activations
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
ing_activations(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    corpus=snakemake.params.corpus,
    params=snakemake.params.ing,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    neurons_path=snakemake.input.neurons,
    out_prompts=snakemake.output.prompts,
    out_activations=snakemake.output.activations,
)
