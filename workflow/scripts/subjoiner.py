from stages_of_inference.casestudies.rules import subjoiner
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
subjoiner(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    corpus=snakemake.params.corpus,
    params=snakemake.params.subjoiner,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    out_prompts=snakemake.output.prompts,
    out_scores=snakemake.output.scores,
    out_examples=snakemake.output.examples,
)
