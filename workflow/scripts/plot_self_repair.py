from stages_of_inference.core.jobs import job
from stages_of_inference.self_repair.rules import plot_self_repair

with job(snakemake):
    plot_self_repair(
        heads=list(snakemake.input.heads),
        top_fraction=snakemake.params.top_fraction,
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
