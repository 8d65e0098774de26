from stages_of_inference.casestudies.rules import plot_fig9
from stages_of_inference.core.jobs import job

with job(snakemake):
    plot_fig9(
        models=snakemake.params.models,
        scores=list(snakemake.input.scores),
        examples=list(snakemake.input.examples),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
