from stages_of_inference.core.io import setup_logging
from stages_of_inference.robustness.rules import figure3

setup_logging(snakemake.log[0])
figure3(list(snakemake.input), snakemake.output[0])
