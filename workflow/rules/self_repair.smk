# Self-repair of ablated attention heads (Rushing & Nanda; config key `self_repair`; by
# default their definition: resample ablation from other corpus sequences, the true next
# token): one job per model ablates every head (all heads of a layer in one batch, from the
# cached residual entering the layer); two figure rules draw from the tables.
SELF_REPAIR = config["self_repair"]


rule self_repair:
    """Direct effect, total effect, self-repair and its parts (final norm, later attention,
    the layer's own post-norm on sandwich-norm models, MLPs) of every head on the first
    corpus sequences (the others are resample sources); top anti-erasure neurons per head."""
    input:
        manifest="results/models/{model}/manifest.json",
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
    output:
        heads="results/{model}/self_repair.parquet",
        tokens="results/{model}/self_repair_tokens.parquet",
        neurons="results/{model}/self_repair_neurons.parquet",
    log:
        "logs/self_repair/{model}.log",
    benchmark:
        "results/benchmarks/self_repair/{model}.tsv"
    priority: PRIORITY["self_repair"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        settings=pick(
            SELF_REPAIR,
            "n_sequences",
            "seq_len",
            "ablation",
            "resample_offset",
            "target",
            "positions",
            "centre_unembed",
            "top_fraction",
            "n_top_neurons",
        ),
        code=code("self_repair"),
        numerics=NUMERICS,
    script:
        "../scripts/self_repair.py"


rule plot_self_repair:
    """Self-repair vs direct effect per head, its parts against depth, the final norm's
    share: every model on shared axes, in its style."""
    input:
        heads=expand("results/{model}/self_repair.parquet", model=MODELS_OF["self_repair"]),
    output:
        report("figures/self_repair.pdf", caption="../report/self_repair.rst", category="Self-repair"),
    log:
        "logs/plot_self_repair.log",
    benchmark:
        "results/benchmarks/plot_self_repair.tsv"
    conda:
        CONDA_ENV
    params:
        top_fraction=SELF_REPAIR["top_fraction"],
        code=code("plot_self_repair"),
        styles=STYLES,
    script:
        "../scripts/plot_self_repair.py"


rule plot_self_repair_tokens:
    """Per-token spread of self-repair / direct effect for the heads with the largest DE."""
    input:
        heads=expand("results/{model}/self_repair.parquet", model=MODELS_OF["self_repair"]),
        tokens=expand("results/{model}/self_repair_tokens.parquet", model=MODELS_OF["self_repair"]),
    output:
        report("figures/self_repair_tokens.pdf", caption="../report/self_repair_tokens.rst", category="Self-repair"),
    log:
        "logs/plot_self_repair_tokens.log",
    benchmark:
        "results/benchmarks/plot_self_repair_tokens.tsv"
    conda:
        CONDA_ENV
    params:
        figure_heads=SELF_REPAIR["figure_heads"],
        code=code("plot_self_repair_tokens"),
        styles=STYLES,
    script:
        "../scripts/plot_self_repair_tokens.py"
