from stages_of_inference.core.jobs import job
from stages_of_inference.edits.rules import plot_drop_predictors

with job(snakemake):
    plot_drop_predictors(
        predictors=list(snakemake.input.predictors),
        spearman=list(snakemake.input.spearman),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
