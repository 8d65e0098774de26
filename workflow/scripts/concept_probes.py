from stages_of_inference.concepts.rules import concept_probes
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    concept_probes(
        model=snakemake.wildcards.model,
        patterns=snakemake.input.patterns,
        sentences=snakemake.input.sentences,
        sae=snakemake.input.sae,
        sae_config=snakemake.input.config,
        settings=snakemake.config["concepts"],
        runtime=runtime,
        out_probes=snakemake.output.probes,
        out_methods=snakemake.output.methods,
        out_findings=snakemake.output.findings,
    )
