from stages_of_inference.concepts.rules import concept_stimuli
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    concept_stimuli(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        stimuli=list(snakemake.input.stimuli),
        corpus=snakemake.params.corpus,
        settings=snakemake.config["concepts"],
        runtime=runtime,
        out_residuals=snakemake.output.residuals,
        out_patterns=snakemake.output.patterns,
        out_sentences=snakemake.output.sentences,
    )
