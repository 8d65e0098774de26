from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import figure_tasks

setup_logging(snakemake.log[0])
figure_tasks(snakemake.params.models, snakemake.input.tasks, snakemake.input.counts, snakemake.output[0])
