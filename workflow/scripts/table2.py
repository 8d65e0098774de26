from stages_of_inference.depth.rules import table2
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
table2(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
