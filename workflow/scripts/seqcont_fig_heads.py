from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import figure_heads

setup_logging(snakemake.log[0])
figure_heads(snakemake.params.models, snakemake.input.components, snakemake.output[0])
