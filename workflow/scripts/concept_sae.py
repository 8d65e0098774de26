from stages_of_inference.concepts.rules import concept_sae
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
concept_sae(
    model=snakemake.wildcards.model,
    residuals=snakemake.input.residuals,
    params=snakemake.params.concepts,
    runtime=snakemake.params.runtime,
    out_sae=snakemake.output.sae,
    out_config=snakemake.output.config,
    out_training=snakemake.output.training,
    out_quality=snakemake.output.quality,
    out_features=snakemake.output.features,
)
