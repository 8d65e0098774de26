from stages_of_inference.core.io import setup_logging
from stages_of_inference.core.rules import tokenize

setup_logging(snakemake.log[0])
tokenize(snakemake.input.model, snakemake.params.corpus, snakemake.output.tokens, snakemake.output.record)
