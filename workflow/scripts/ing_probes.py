from stages_of_inference.casestudies.rules import ing_probes
from stages_of_inference.core.jobs import job

with job(snakemake):
    ing_probes(
        model=snakemake.wildcards.model,
        prompts=snakemake.input.prompts,
        activations=snakemake.input.activations,
        ing_neurons=snakemake.input.ing_neurons,
        settings=snakemake.config["casestudies"]["ing"],
        out=snakemake.output[0],
    )
