from stages_of_inference.core.jobs import job
from stages_of_inference.self_repair.rules import plot_self_repair_tokens

with job(snakemake):
    plot_self_repair_tokens(
        heads=list(snakemake.input.heads),
        tokens=list(snakemake.input.tokens),
        figure_heads=snakemake.params.figure_heads,
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
