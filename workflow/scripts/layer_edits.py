from stages_of_inference.core.jobs import job
from stages_of_inference.edits.rules import layer_edits

with job(snakemake) as runtime:
    layer_edits(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        corpus=snakemake.input.corpus,
        record=snakemake.input.record,
        robustness=list(snakemake.input.robustness),
        settings=snakemake.config["edits"],
        runtime=runtime,
        out_summary=snakemake.output.summary,
        out_tokens=snakemake.output.tokens,
        out_cka=snakemake.output.cka,
        out_predictors=snakemake.output.predictors,
        out_spearman=snakemake.output.spearman,
    )
