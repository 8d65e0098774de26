# The robustness study (src/stages_of_inference/robustness/): drop or swap every layer in
# chunks of layers, gather them, Figure 3 and the accuracy-retained table.


rule interventions_chunk:
    """Drop or swap every layer of a chunk; one baseline pass per batch, prefix-cached."""
    input:
        manifest="results/models/{model}/manifest.json",
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
    output:
        "results/{model}/interventions/{kind}/{chunk}.parquet",
    log:
        "logs/interventions_chunk/{model}/{kind}/{chunk}.log",
    benchmark:
        "results/benchmarks/interventions_chunk/{model}/{kind}/{chunk}.tsv"
    priority: PRIORITY["interventions_chunk"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        code=code("interventions_chunk"),
        numerics=NUMERICS,
    script:
        "../scripts/interventions_chunk.py"


rule interventions:
    """All chunks of a model: per-(kind, layer) mean and SE, and the per-token table."""
    input:
        chunk_files,
    output:
        summary="results/{model}/interventions.parquet",
        tokens="results/{model}/interventions_tokens.parquet",
    log:
        "logs/interventions/{model}.log",
    benchmark:
        "results/benchmarks/interventions/{model}.tsv"
    conda:
        CONDA_ENV
    params:
        n_layers=lambda wc: N_LAYERS[wc.model],
        code=code("interventions"),
    script:
        "../scripts/interventions.py"


rule plot_fig3:
    """Figure 3: swap (top) and drop (bottom); KL, top-1 agreement, Δentropy."""
    input:
        expand("results/{model}/interventions.parquet", model=MODELS_OF["robustness"]),
    output:
        report(
            "figures/fig3.pdf",
            caption="../report/fig3.rst",
            category="Figure 3: layer drop and swap",
        ),
    log:
        "logs/plot_fig3.log",
    benchmark:
        "results/benchmarks/plot_fig3.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("plot_fig3"),
        styles=STYLES,
    script:
        "../scripts/plot_fig3.py"


rule table_robustness:
    """Headline table: fraction of baseline accuracy retained per model and intervention."""
    input:
        expand("results/{model}/interventions.parquet", model=MODELS_OF["robustness"]),
    output:
        csv=report(
            "figures/table_robustness.csv",
            caption="../report/table_robustness.rst",
            category="Table: accuracy retained",
        ),
        md=report(
            "figures/table_robustness.md",
            caption="../report/table_robustness_md.rst",
            category="Table: accuracy retained",
        ),
    log:
        "logs/table_robustness.log",
    benchmark:
        "results/benchmarks/table_robustness.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("table_robustness"),
    script:
        "../scripts/table_robustness.py"
