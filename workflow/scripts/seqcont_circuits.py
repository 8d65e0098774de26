from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import seqcont_circuits

with job(snakemake) as runtime:
    seqcont_circuits(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        prompts=snakemake.input.prompts,
        settings=snakemake.config["seqcont"],
        runtime=runtime,
        out_circuits=snakemake.output.circuits,
        out_summary=snakemake.output.summary,
    )
