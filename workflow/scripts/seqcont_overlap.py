from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import seqcont_overlap

setup_logging(snakemake.log[0])
seqcont_overlap(snakemake.wildcards.model, snakemake.input.circuits, snakemake.input.successor, snakemake.output[0])
