from stages_of_inference.core.jobs import job
from stages_of_inference.depth.rules import layer_stats

with job(snakemake) as runtime:
    layer_stats(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        corpus=snakemake.input.corpus,
        record=snakemake.input.record,
        runtime=runtime,
        batch_size=snakemake.config["interventions"]["batch_size"],
        out_summary=snakemake.output.summary,
        out_tokens=snakemake.output.tokens,
    )
