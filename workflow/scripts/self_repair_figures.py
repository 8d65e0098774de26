from stages_of_inference.core.io import setup_logging
from stages_of_inference.self_repair.rules import self_repair_figures

setup_logging(snakemake.log[0])
self_repair_figures(
    heads=snakemake.input.heads,
    tokens=snakemake.input.tokens,
    top_fraction=snakemake.params.top_fraction,
    n_heads=snakemake.params.n_heads,
    out_pdf=snakemake.output.heads,
    out_tokens_pdf=snakemake.output.tokens,
)
