from stages_of_inference.casestudies.rules import ing_activations
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    ing_activations(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        ing_neurons=snakemake.input.ing_neurons,
        corpus=snakemake.params.corpus,
        settings=snakemake.config["casestudies"]["ing"],
        runtime=runtime,
        out_prompts=snakemake.output.prompts,
        out_activations=snakemake.output.activations,
    )
