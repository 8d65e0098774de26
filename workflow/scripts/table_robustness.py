from stages_of_inference.core.jobs import job
from stages_of_inference.robustness.rules import table_robustness

with job(snakemake):
    table_robustness(
        summaries=list(snakemake.input),
        out_csv=snakemake.output.csv,
        out_md=snakemake.output.md,
    )
