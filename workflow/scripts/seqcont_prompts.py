from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import seqcont_prompts

setup_logging(snakemake.log[0])
seqcont_prompts(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    params=snakemake.params.seqcont,
    out_prompts=snakemake.output.prompts,
    out_counts=snakemake.output.counts,
)
