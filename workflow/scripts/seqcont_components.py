from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import seqcont_components

with job(snakemake) as runtime:
    seqcont_components(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        prompts=snakemake.input.prompts,
        settings=snakemake.config["seqcont"],
        runtime=runtime,
        out_tasks=snakemake.output.tasks,
        out_components=snakemake.output.components,
        out_successor=snakemake.output.successor,
    )
