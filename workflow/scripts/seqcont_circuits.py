from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import seqcont_circuits

setup_logging(snakemake.log[0])
seqcont_circuits(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    prompts_path=snakemake.input.prompts,
    params=snakemake.params.seqcont,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    out_circuits=snakemake.output.circuits,
    out_summary=snakemake.output.summary,
)
