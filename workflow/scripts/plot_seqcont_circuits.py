from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import plot_seqcont_circuits

with job(snakemake):
    plot_seqcont_circuits(
        models=snakemake.params.models,
        circuits=list(snakemake.input.circuits),
        summary=list(snakemake.input.summary),
        overlap=list(snakemake.input.overlap),
        successor=list(snakemake.input.successor),
        successor_score=snakemake.params.successor_score,
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
