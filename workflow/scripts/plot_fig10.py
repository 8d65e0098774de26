from stages_of_inference.casestudies.rules import plot_fig10
from stages_of_inference.core.jobs import job

with job(snakemake):
    plot_fig10(
        models=snakemake.params.models,
        probes=list(snakemake.input.probes),
        vocab=list(snakemake.input.vocab),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
