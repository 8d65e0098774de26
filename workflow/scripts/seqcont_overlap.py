from stages_of_inference.core.jobs import job
from stages_of_inference.seqcont.rules import seqcont_overlap

with job(snakemake):
    seqcont_overlap(
        model=snakemake.wildcards.model,
        circuits=snakemake.input.circuits,
        successor=snakemake.input.successor,
        successor_score=snakemake.params.successor_score,
        out=snakemake.output[0],
    )
