# Self-repair of ablated attention heads (Rushing & Nanda; config key `self_repair`):
# one job per model ablates every head (all heads of a layer in one batch, from the cached
# residual entering the layer); one figure rule draws both figures from the tables.


rule self_repair:
    """Direct effect, total effect, self-repair and its parts (final norm, later attention,
    MLPs) of every head on the corpus tokens; top anti-erasure neurons per head."""
    input:
        model="results/models/{model}/manifest.json",
        tokens="results/{model}/tokens.pt",
        record="results/{model}/tokens.json",
    output:
        heads="results/{model}/self_repair.parquet",
        tokens="results/{model}/self_repair_tokens.parquet",
        neurons="results/{model}/self_repair_neurons.parquet",
    params:
        runtime=RUNTIME,
        settings=config["self_repair"],
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    priority: PRIORITY["self_repair"]
    log:
        "logs/self_repair/{model}.log",
    benchmark:
        "results/benchmarks/self_repair/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/self_repair.py"


rule self_repair_figures:
    """Self-repair vs direct effect per head and the final norm's share; per-token spread."""
    input:
        heads=expand("results/{model}/self_repair.parquet", model=MODELS),
        tokens=expand("results/{model}/self_repair_tokens.parquet", model=MODELS),
    output:
        heads=report(
            "figures/self_repair.pdf",
            caption="../report/self_repair.rst",
            category="Self-repair",
        ),
        tokens=report(
            "figures/self_repair_tokens.pdf",
            caption="../report/self_repair_tokens.rst",
            category="Self-repair",
        ),
    params:
        top_fraction=config["self_repair"]["top_fraction"],
        n_heads=config["self_repair"]["figure_heads"],
    log:
        "logs/figures/self_repair.log",
    benchmark:
        "results/benchmarks/figures/self_repair.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/self_repair_figures.py"
