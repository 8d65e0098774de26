from stages_of_inference.core.io import setup_logging
from stages_of_inference.self_repair.rules import self_repair

setup_logging(snakemake.log[0])
self_repair(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    tokens_path=snakemake.input.tokens,
    record_path=snakemake.input.record,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    settings=snakemake.params.settings,
    out_heads=snakemake.output.heads,
    out_tokens=snakemake.output.tokens,
    out_neurons=snakemake.output.neurons,
)
