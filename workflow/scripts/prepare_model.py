from stages_of_inference.core.jobs import job
from stages_of_inference.core.rules import prepare_model

with job(snakemake):
    prepare_model(
        model=snakemake.wildcards.model,
        spec=snakemake.params.spec,
        out_manifest=snakemake.output[0],
    )
