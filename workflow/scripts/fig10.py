from stages_of_inference.casestudies.rules import figure10
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
figure10(snakemake.params.models, snakemake.input.probes, snakemake.input.vocab, snakemake.output[0])
