from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import seqcont_prompts

with job(snakemake):
    seqcont_prompts(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        settings=snakemake.config["seqcont"],
        out_prompts=snakemake.output.prompts,
        out_counts=snakemake.output.counts,
    )
