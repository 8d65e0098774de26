from stages_of_inference.depth.rules import neurons
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
neurons(
    model=snakemake.wildcards.model,
    spec_entry=snakemake.params.spec,
    manifest=snakemake.input.model,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    out_neurons=snakemake.output.neurons,
    out_info=snakemake.output.info,
)
