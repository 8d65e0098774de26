from stages_of_inference.casestudies.rules import subjoiner
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    subjoiner(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        corpus=snakemake.params.corpus,
        settings=snakemake.config["casestudies"]["subjoiner"],
        runtime=runtime,
        out_prompts=snakemake.output.prompts,
        out_scores=snakemake.output.scores,
        out_examples=snakemake.output.examples,
    )
