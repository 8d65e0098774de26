from stages_of_inference.casestudies.rules import figure9
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
figure9(snakemake.params.models, snakemake.input.scores, snakemake.input.examples, snakemake.output[0])
