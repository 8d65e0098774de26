from stages_of_inference.casestudies.rules import ing_probes
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
ing_probes(
    model=snakemake.wildcards.model,
    prompts_path=snakemake.input.prompts,
    activations_path=snakemake.input.activations,
    neurons_path=snakemake.input.neurons,
    params=snakemake.params.ing,
    out=snakemake.output[0],
)
