from stages_of_inference.core.io import setup_logging
from stages_of_inference.robustness.rules import robustness_table

setup_logging(snakemake.log[0])
robustness_table(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
