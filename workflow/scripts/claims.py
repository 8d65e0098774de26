from stages_of_inference.claims.rules import claims
from stages_of_inference.core.jobs import job

with job(snakemake):
    claims(
        tables=list(snakemake.input.tables),
        models_of=dict(snakemake.params.models_of),
        out_csv=snakemake.output.csv,
        out_md=snakemake.output.md,
        out_html=snakemake.output.html,
    )
