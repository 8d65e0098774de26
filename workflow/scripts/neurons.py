from stages_of_inference.core.jobs import job
from stages_of_inference.depth.rules import neurons

with job(snakemake) as runtime:
    neurons(
        model=snakemake.wildcards.model,
        spec=snakemake.params.spec,
        manifest=snakemake.input.manifest,
        runtime=runtime,
        out_neurons=snakemake.output.neurons,
        out_info=snakemake.output.info,
    )
