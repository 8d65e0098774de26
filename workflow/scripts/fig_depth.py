from stages_of_inference.depth.rules import figure
from stages_of_inference.core.io import setup_logging

setup_logging(snakemake.log[0])
figure(
    snakemake.params.number,
    list(snakemake.input.summaries),
    snakemake.output[0],
    neuron_tables=list(snakemake.input.neurons),
)
