from stages_of_inference.core.jobs import job
from stages_of_inference.robustness.rules import plot_fig3

with job(snakemake):
    plot_fig3(
        summaries=list(snakemake.input),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
