from stages_of_inference.core.jobs import job
from stages_of_inference.edits.rules import plot_layer_edits

with job(snakemake):
    plot_layer_edits(
        summaries=list(snakemake.input),
        styles=snakemake.params.styles,
        out_windows=snakemake.output.windows,
        out_painters=snakemake.output.painters,
        out_repeat=snakemake.output.repeat,
    )
