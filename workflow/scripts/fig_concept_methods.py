from stages_of_inference.concepts.rules import figure_concept_methods
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
figure_concept_methods(
    models=snakemake.params.models,
    methods=snakemake.input.methods,
    found=snakemake.input.findings,
    out_pdf=snakemake.output[0],
)
