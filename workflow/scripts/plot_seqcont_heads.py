from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import plot_seqcont_heads

with job(snakemake):
    plot_seqcont_heads(
        models=snakemake.params.models,
        components=list(snakemake.input.components),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
