from stages_of_inference.io import setup_logging
from stages_of_inference.pipeline import prepare

setup_logging(snakemake.log[0])
prepare(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])
