rule fig3:
    """Figure 3: swap (top) and drop (bottom); KL, top-1 agreement, Δentropy."""
    input:
        expand("results/{model}/interventions_summary.parquet", model=MODELS),
    output:
        report(
            "figures/fig3.pdf",
            caption="../report/fig3.rst",
            category="Figure 3: layer drop and swap",
        ),
    log:
        "logs/figures/fig3.log",
    benchmark:
        "results/benchmarks/figures/fig3.tsv"
    script:
        "../scripts/fig3.py"


rule table_robustness:
    """Headline table: fraction of baseline accuracy retained per model and intervention."""
    input:
        expand("results/{model}/interventions_summary.parquet", model=MODELS),
    output:
        csv="figures/table_robustness.csv",
        md="figures/table_robustness.md",
    log:
        "logs/figures/table_robustness.log",
    benchmark:
        "results/benchmarks/figures/table_robustness.tsv"
    script:
        "../scripts/table_robustness.py"
