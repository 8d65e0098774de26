from stages_of_inference.casestudies.rules import ing_neurons
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
ing_neurons(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    params=snakemake.params.ing,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    out_neurons=snakemake.output.neurons,
    out_vocab=snakemake.output.vocab,
    moments_path=snakemake.input.moments,
)
