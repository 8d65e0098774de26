from stages_of_inference.core.jobs import job
from stages_of_inference.depth.rules import plot_depth

with job(snakemake):
    plot_depth(
        number=snakemake.params.number,
        summaries=list(snakemake.input.summaries),
        neurons=list(snakemake.input.neurons),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
