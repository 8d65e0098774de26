from stages_of_inference.core.jobs import job
from stages_of_inference.depth.rules import table2

with job(snakemake):
    table2(
        infos=list(snakemake.input),
        out_csv=snakemake.output.csv,
        out_md=snakemake.output.md,
    )
