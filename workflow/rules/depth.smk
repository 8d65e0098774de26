# The depth study (src/stages_of_inference/depth/), Figures 4-8 and Table 2: one hooked
# pass per model (layer_stats), the weights alone (neurons), and figure rules that only
# read tables.


rule layer_stats:
    """Per-layer statistics in one streamed forward pass with hooks: attention to the
    previous five tokens, attention/MLP write norms, logit-lens KL and entropy, each in the
    workflow's definition and (previous five, logit lens) in the authors' notebooks'; the
    embedding is a point of the logit lens (layer -1)."""
    input:
        manifest="results/models/{model}/manifest.json",
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
    output:
        summary="results/{model}/layer_stats.parquet",
        tokens="results/{model}/layer_stats_tokens.parquet",
    log:
        "logs/layer_stats/{model}.log",
    benchmark:
        "results/benchmarks/layer_stats/{model}.tsv"
    priority: PRIORITY["layer_stats"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        code=code("layer_stats"),
        numerics=NUMERICS,
    script:
        "../scripts/layer_stats.py"


rule neurons:
    """Prediction / suppression neurons from the folded weights (no forward pass), and
    the model's row of Table 2."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        neurons="results/{model}/neurons.parquet",
        info="results/{model}/model_info.json",
    log:
        "logs/neurons/{model}.log",
    benchmark:
        "results/benchmarks/neurons/{model}.tsv"
    priority: PRIORITY["neurons"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        spec=lambda wc: config["models"][wc.model],
        code=code("neurons"),
        numerics=NUMERICS,
    script:
        "../scripts/neurons.py"


DEPTH_FIGURES = {
    4: "Figure 4: attention to the previous five tokens",
    5: "Figure 5: attention vs. MLP",
    6: "Figure 6: logit lens and neuron types",
    7: "Figure 7: MLP output norm",
    8: "Figure 8: logit-lens entropy",
}

# plot_fig4 ... plot_fig8: one line per model (its style from STYLES) against relative depth;
# Figures 4 and 8 draw the authors' definition and the workflow's side by side; Figure 6 (a
# panel per model) also reads the neuron tables.
for _n, _title in DEPTH_FIGURES.items():

    rule:
        name:
            f"plot_fig{_n}"
        input:
            summaries=expand("results/{model}/layer_stats.parquet", model=MODELS_OF["depth"]),
            neurons=expand("results/{model}/neurons.parquet", model=MODELS_OF["depth"]) if _n == 6 else [],
        output:
            report(f"figures/fig{_n}.pdf", caption=f"../report/fig{_n}.rst", category=_title),
        log:
            f"logs/plot_fig{_n}.log",
        benchmark:
            f"results/benchmarks/plot_fig{_n}.tsv"
        conda:
            CONDA_ENV
        params:
            number=_n,
            code=code("plot_depth"),
            styles=STYLES,
        script:
            "../scripts/plot_depth.py"


rule table2:
    """Table 2: family, parameters, layers, d_model and heads of every configured model."""
    input:
        expand("results/{model}/model_info.json", model=MODELS_OF["depth"]),
    output:
        csv=report("figures/table2.csv", caption="../report/table2.rst", category="Table 2: the models"),
        md=report("figures/table2.md", caption="../report/table2_md.rst", category="Table 2: the models"),
    log:
        "logs/table2.log",
    benchmark:
        "results/benchmarks/table2.tsv"
    conda:
        CONDA_ENV
    params:
        code=code("table2"),
    script:
        "../scripts/table2.py"
