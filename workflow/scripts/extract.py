from stages_of_inference.depth.rules import extract
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
extract(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    tokens_path=snakemake.input.tokens,
    record_path=snakemake.input.record,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    batch_size=snakemake.params.batch_size,
    out_tokens=snakemake.output.tokens,
    out_summary=snakemake.output.summary,
)
