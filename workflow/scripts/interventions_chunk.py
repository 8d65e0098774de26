from stages_of_inference.core.jobs import job
from stages_of_inference.robustness.rules import interventions_chunk

with job(snakemake) as runtime:
    interventions_chunk(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        corpus=snakemake.input.corpus,
        record=snakemake.input.record,
        kind=snakemake.wildcards.kind,
        chunk=snakemake.wildcards.chunk,
        runtime=runtime,
        batch_size=snakemake.config["interventions"]["batch_size"],
        out=snakemake.output[0],
    )
