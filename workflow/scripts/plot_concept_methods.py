from stages_of_inference.concepts.rules import plot_concept_methods
from stages_of_inference.core.jobs import job

with job(snakemake):
    plot_concept_methods(
        models=snakemake.params.models,
        methods=list(snakemake.input.methods),
        findings=list(snakemake.input.findings),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
