from stages_of_inference.core.jobs import job
from stages_of_inference.robustness.rules import interventions

with job(snakemake):
    interventions(
        model=snakemake.wildcards.model,
        n_layers=snakemake.params.n_layers,
        chunks=list(snakemake.input),
        out_summary=snakemake.output.summary,
        out_tokens=snakemake.output.tokens,
    )
