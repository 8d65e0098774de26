from stages_of_inference.concepts.rules import figure_sae_training
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
figure_sae_training(
    models=snakemake.params.models,
    training=snakemake.input.training,
    quality=snakemake.input.quality,
    features=snakemake.input.features,
    out_pdf=snakemake.output[0],
)
