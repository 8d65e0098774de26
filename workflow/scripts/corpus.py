from stages_of_inference.core.jobs import job
from stages_of_inference.core.rules import corpus

with job(snakemake):
    corpus(
        manifest=snakemake.input.manifest,
        corpus=snakemake.params.corpus,
        out_corpus=snakemake.output.corpus,
        out_record=snakemake.output.record,
    )
