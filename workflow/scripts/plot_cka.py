from stages_of_inference.core.jobs import job
from stages_of_inference.edits.rules import plot_cka

with job(snakemake):
    plot_cka(
        cka=list(snakemake.input),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
