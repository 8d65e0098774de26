from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import figure_circuits

setup_logging(snakemake.log[0])
figure_circuits(snakemake.params.models, snakemake.input.circuits, snakemake.input.summary,
                snakemake.input.overlap, snakemake.input.successor, snakemake.output[0])
