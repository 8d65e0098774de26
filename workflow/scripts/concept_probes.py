from stages_of_inference.concepts.rules import concept_probes_rule
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
concept_probes_rule(
    model=snakemake.wildcards.model,
    patterns_path=snakemake.input.patterns,
    sentences_path=snakemake.input.sentences,
    sae_path=snakemake.input.sae,
    sae_config_path=snakemake.input.config,
    params=snakemake.params.concepts,
    runtime=snakemake.params.runtime,
    out_probes=snakemake.output.probes,
    out_methods=snakemake.output.methods,
    out_findings=snakemake.output.findings,
)
