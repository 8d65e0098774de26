from stages_of_inference.casestudies.rules import ing_neurons
from stages_of_inference.core.jobs import job

with job(snakemake) as runtime:
    ing_neurons(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        neurons=snakemake.input.neurons,
        settings=snakemake.config["casestudies"]["ing"],
        runtime=runtime,
        out_ing_neurons=snakemake.output.ing_neurons,
        out_vocab=snakemake.output.vocab,
    )
