from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import plot_seqcont_tasks

with job(snakemake):
    plot_seqcont_tasks(
        models=snakemake.params.models,
        tasks=list(snakemake.input.tasks),
        counts=list(snakemake.input.counts),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
