# The robustness study (src/stages_of_inference/robustness/): drop or swap every layer in
# chunks of layers, aggregate, Figure 3 and the accuracy-retained table.


rule intervene:
    """Drop or swap every layer of a chunk; one baseline pass per batch, prefix-cached."""
    input:
        model="results/models/{model}/manifest.json",
        tokens="results/{model}/tokens.pt",
        record="results/{model}/tokens.json",
    output:
        "results/{model}/interventions/{kind}/{chunk}.parquet",
    params:
        runtime=RUNTIME,
        batch_size=config["interventions"]["batch_size"],
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    priority: PRIORITY["intervene"]
    log:
        "logs/intervene/{model}/{kind}/{chunk}.log",
    benchmark:
        "results/benchmarks/intervene/{model}/{kind}/{chunk}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/intervene.py"


rule aggregate:
    """All chunks of a model: per-token table and per-(kind, layer) mean and SE."""
    input:
        chunk_files,
    output:
        tokens="results/{model}/interventions.parquet",
        summary="results/{model}/interventions_summary.parquet",
    params:
        n_layers=lambda wc: N_LAYERS[wc.model],
    log:
        "logs/aggregate/{model}.log",
    benchmark:
        "results/benchmarks/aggregate/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate.py"


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
    conda:
        CONDA_ENV
    script:
        "../scripts/fig3.py"


rule table_robustness:
    """Headline table: fraction of baseline accuracy retained per model and intervention."""
    input:
        expand("results/{model}/interventions_summary.parquet", model=MODELS),
    output:
        csv=report(
            "figures/table_robustness.csv",
            caption="../report/table_robustness.rst",
            category="Table: accuracy retained",
        ),
        md="figures/table_robustness.md",
    log:
        "logs/figures/table_robustness.log",
    benchmark:
        "results/benchmarks/figures/table_robustness.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/table_robustness.py"
