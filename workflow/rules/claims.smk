# The claims ledger: every claim of the paper (claims/paper.py) and of the seed studies
# (claims/seeds.py), tested on every model of its study, from the result tables alone.


rule claims:
    """The claims ledger: per claim and model, the statistic, its interval and the verdict."""
    input:
        tables=claim_inputs(MODELS_OF),
    output:
        csv=report("figures/claims.csv", caption="../report/claims.rst", category="Claims"),
        md=report("figures/claims.md", caption="../report/claims.rst", category="Claims"),
        html=report("figures/claims.html", caption="../report/claims.rst", category="Claims"),
    log:
        "logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
    conda:
        CONDA_ENV
    params:
        models_of=MODELS_OF,
        code=code("claims"),
    script:
        "../scripts/claims.py"
