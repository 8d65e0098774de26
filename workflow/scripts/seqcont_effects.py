from stages_of_inference.core.io import setup_logging
from stages_of_inference.seqcont.rules import seqcont_effects

setup_logging(snakemake.log[0])
seqcont_effects(
    model=snakemake.wildcards.model,
    manifest=snakemake.input.model,
    prompts_path=snakemake.input.prompts,
    params=snakemake.params.seqcont,
    runtime={**snakemake.params.runtime, "threads": snakemake.threads},
    out_tasks=snakemake.output.tasks,
    out_components=snakemake.output.components,
    out_successor=snakemake.output.successor,
)
