from stages_of_inference.concepts.rules import concept_sae
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    concept_sae(
        model=snakemake.wildcards.model,
        residuals=snakemake.input.residuals,
        settings=snakemake.config["concepts"],
        runtime=runtime,
        out_sae=snakemake.output.sae,
        out_config=snakemake.output.config,
        out_training=snakemake.output.training,
        out_quality=snakemake.output.quality,
        out_features=snakemake.output.features,
    )
