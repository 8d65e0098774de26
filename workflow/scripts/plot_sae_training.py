from stages_of_inference.concepts.rules import plot_sae_training
from stages_of_inference.core.jobs import job

with job(snakemake):
    plot_sae_training(
        models=snakemake.params.models,
        training=list(snakemake.input.training),
        quality=list(snakemake.input.quality),
        features=list(snakemake.input.features),
        styles=snakemake.params.styles,
        out_pdf=snakemake.output[0],
    )
