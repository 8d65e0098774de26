from stages_of_inference.core.jobs import job
from stages_of_inference.self_repair.rules import self_repair

with job(snakemake) as runtime:
    self_repair(
        model=snakemake.wildcards.model,
        manifest=snakemake.input.manifest,
        corpus=snakemake.input.corpus,
        record=snakemake.input.record,
        settings=snakemake.config["self_repair"],
        runtime=runtime,
        out_heads=snakemake.output.heads,
        out_tokens=snakemake.output.tokens,
        out_neurons=snakemake.output.neurons,
    )
