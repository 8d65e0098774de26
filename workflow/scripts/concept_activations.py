from stages_of_inference.concepts.rules import concept_activations
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
concept_activations(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    corpus=snakemake.params.corpus,
    params=snakemake.params.concepts,
    runtime=snakemake.params.runtime,
    stimuli_dir=snakemake.params.stimuli,
    out_residuals=snakemake.output.residuals,
    out_patterns=snakemake.output.patterns,
    out_sentences=snakemake.output.sentences,
)
