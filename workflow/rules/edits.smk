# Layer edits (config key `edits`; src/stages_of_inference/edits/): one job per model runs
# every edit plan from the cached residual (windows of dropped blocks, the Painters variants,
# repeated ranges) and, from the same baseline pass, the CKA across depth and the
# drop predictors; windows of one block are the robustness study's drops, read from its
# per-token table on the same tokens. Three figure rules draw from the tables.
EDITS = config["edits"]
for _warning in checks.subset_warnings(config["corpus"], "edits", EDITS):
    checks.warn_once(_warning)


rule layer_edits:
    """Every edit plan on the study's tokens with Figure 3's per-token metrics; CKA of the
    residual stream after every pair of blocks; Block Influence and angular distances
    against the measured drops."""
    input:
        manifest="results/models/{model}/manifest.json",
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
        robustness=["results/{model}/interventions_tokens.parquet"] if "drop" in KINDS else [],
    output:
        summary="results/{model}/layer_edits.parquet",
        tokens="results/{model}/layer_edits_tokens.parquet",
        cka="results/{model}/cka.parquet",
        predictors="results/{model}/drop_predictors.parquet",
        spearman="results/{model}/drop_predictors_spearman.parquet",
    log:
        "logs/layer_edits/{model}.log",
    benchmark:
        "results/benchmarks/layer_edits/{model}.tsv"
    priority: PRIORITY["layer_edits"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        settings=pick(
            EDITS,
            "n_sequences",
            "seq_len",
            "window_max",
            "painters_starts",
            "painters_kinds",
            "painters_loops",
            "seed",
            "repeat_widths",
            "repeat_spans",
            "repeat_copies",
        ),
        code=code("layer_edits"),
        numerics=NUMERICS,
    script:
        "../scripts/layer_edits.py"


rule plot_cka:
    """CKA heat maps, one per model, on a 0-1 scale."""
    input:
        expand("results/{model}/cka.parquet", model=MODELS_OF["edits"]),
    output:
        report("figures/cka.pdf", caption="../report/cka.rst", category="Layer edits"),
    log:
        "logs/plot_cka.log",
    benchmark:
        "results/benchmarks/plot_cka.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("plot_cka"),
        styles=STYLES,
    script:
        "../scripts/plot_cka.py"


rule plot_layer_edits:
    """One figure per family of edits: windows, Painters variants, repeats."""
    input:
        expand("results/{model}/layer_edits.parquet", model=MODELS_OF["edits"]),
    output:
        windows=report(
            "figures/layer_edits_windows.pdf", caption="../report/layer_edits_windows.rst", category="Layer edits"
        ),
        painters=report(
            "figures/layer_edits_painters.pdf", caption="../report/layer_edits_painters.rst", category="Layer edits"
        ),
        repeat=report(
            "figures/layer_edits_repeat.pdf", caption="../report/layer_edits_repeat.rst", category="Layer edits"
        ),
    log:
        "logs/plot_layer_edits.log",
    benchmark:
        "results/benchmarks/plot_layer_edits.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("plot_layer_edits"),
        styles=STYLES,
    script:
        "../scripts/plot_layer_edits.py"


rule plot_drop_predictors:
    """Block Influence and angular distance against the measured drops, Spearman's rho."""
    input:
        predictors=expand("results/{model}/drop_predictors.parquet", model=MODELS_OF["edits"]),
        spearman=expand("results/{model}/drop_predictors_spearman.parquet", model=MODELS_OF["edits"]),
    output:
        report("figures/drop_predictors.pdf", caption="../report/drop_predictors.rst", category="Layer edits"),
    log:
        "logs/plot_drop_predictors.log",
    benchmark:
        "results/benchmarks/plot_drop_predictors.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("plot_drop_predictors"),
        styles=STYLES,
    script:
        "../scripts/plot_drop_predictors.py"
