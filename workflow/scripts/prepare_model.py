from stages_of_inference.core.io import setup_logging
from stages_of_inference.core.rules import prepare

setup_logging(snakemake.log[0])
prepare(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])
