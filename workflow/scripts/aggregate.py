from stages_of_inference.core.io import setup_logging
from stages_of_inference.robustness.rules import aggregate

setup_logging(snakemake.log[0])
aggregate(
    snakemake.wildcards.model,
    snakemake.params.n_layers,
    list(snakemake.input),
    snakemake.output.tokens,
    snakemake.output.summary,
)
