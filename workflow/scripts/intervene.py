from stages_of_inference.core.io import setup_logging
from stages_of_inference.robustness.rules import intervene

setup_logging(snakemake.log[0])
intervene(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    tokens_path=snakemake.input.tokens,
    record_path=snakemake.input.record,
    kind=snakemake.wildcards.kind,
    chunk=snakemake.wildcards.chunk,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    batch_size=snakemake.params.batch_size,
    out=snakemake.output[0],
)
