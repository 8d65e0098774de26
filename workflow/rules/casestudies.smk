# The case studies (src/stages_of_inference/casestudies/), Figures 9 and 10: sub-joiner
# heads and predicting the suffix "-ing".
# Analysis rules load the model and write tidy tables under results/{model}/; the figure
# rules only read those tables.
SUBJOINER = config["casestudies"]["subjoiner"]
ING = config["casestudies"]["ing"]


rule subjoiner:
    """Multi- vs single-token word prompts from the corpus; every head's sub-joiner score;
    the top head's attention rows for random sample prompts."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        prompts="results/{model}/subjoiner_prompts.parquet",
        scores="results/{model}/subjoiner_scores.parquet",
        examples="results/{model}/subjoiner_examples.parquet",
    log:
        "logs/subjoiner/{model}.log",
    benchmark:
        "results/benchmarks/subjoiner/{model}.tsv"
    priority: PRIORITY["subjoiner"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        corpus=config["corpus"],
        settings=pick(
            SUBJOINER,
            "context_tokens",
            "n_prompts",
            "max_subtokens",
            "max_per_word",
            "n_examples",
            "show_positions",
            "seed",
        ),
        code=code("subjoiner"),
        numerics=NUMERICS,
    script:
        "../scripts/subjoiner.py"


rule ing_neurons:
    """Weights only: how each neuron's W_U·w_out separates -ing tokens from the rest; the
    selected prediction/suppression neurons; vocabulary cosines of the top two. Neuron
    types (skew, kurtosis) come from the neurons rule."""
    input:
        manifest="results/models/{model}/manifest.json",
        neurons="results/{model}/neurons.parquet",
    output:
        ing_neurons="results/{model}/ing_neurons.parquet",
        vocab="results/{model}/ing_vocab.parquet",
    log:
        "logs/ing_neurons/{model}.log",
    benchmark:
        "results/benchmarks/ing_neurons/{model}.tsv"
    priority: PRIORITY["ing_neurons"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        settings=pick(ING, "n_neurons", "require_type"),
        code=code("ing_neurons"),
        numerics=NUMERICS,
    script:
        "../scripts/ing_neurons.py"


rule ing_activations:
    """Balanced -ing / non-ing next-token prompts with a held-out split, the model's own
    top-1 predictions, and the selected neurons' activations at the last position."""
    input:
        manifest="results/models/{model}/manifest.json",
        ing_neurons="results/{model}/ing_neurons.parquet",
    output:
        prompts="results/{model}/ing_prompts.parquet",
        activations="results/{model}/ing_activations.parquet",
    log:
        "logs/ing_activations/{model}.log",
    benchmark:
        "results/benchmarks/ing_activations/{model}.tsv"
    priority: PRIORITY["ing_activations"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        corpus=config["corpus"],
        settings=pick(ING, "context_tokens", "n_prompts", "max_per_word", "test_fraction", "min_prompts", "seed"),
        code=code("ing_activations"),
        numerics=NUMERICS,
    script:
        "../scripts/ing_activations.py"


rule ing_probes:
    """Logistic-regression probes (single neurons, growing ensembles) and the model's own
    accuracy on the same held-out prompts. Tables only."""
    input:
        prompts="results/{model}/ing_prompts.parquet",
        activations="results/{model}/ing_activations.parquet",
        ing_neurons="results/{model}/ing_neurons.parquet",
    output:
        "results/{model}/ing_probes.parquet",
    log:
        "logs/ing_probes/{model}.log",
    benchmark:
        "results/benchmarks/ing_probes/{model}.tsv"
    conda:
        CONDA_ENV
    params:
        settings=pick(ING, "seed"),
        code=code("ing_probes"),
    script:
        "../scripts/ing_probes.py"


rule plot_fig9:
    """Figure 9: sub-joiner score map and the top head's attention rows, per model."""
    input:
        scores=expand("results/{model}/subjoiner_scores.parquet", model=MODELS_OF["casestudies"]),
        examples=expand("results/{model}/subjoiner_examples.parquet", model=MODELS_OF["casestudies"]),
    output:
        report("figures/fig9.pdf", caption="../report/fig9.rst", category="Figure 9: sub-joiner heads"),
    log:
        "logs/plot_fig9.log",
    benchmark:
        "results/benchmarks/plot_fig9.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["casestudies"],
        code=code("plot_fig9"),
        styles=STYLES,
    script:
        "../scripts/plot_fig9.py"


rule plot_fig10:
    """Figure 10: -ing probes vs the model's accuracy; vocabulary histograms of the top
    prediction and suppression neurons."""
    input:
        probes=expand("results/{model}/ing_probes.parquet", model=MODELS_OF["casestudies"]),
        vocab=expand("results/{model}/ing_vocab.parquet", model=MODELS_OF["casestudies"]),
    output:
        report("figures/fig10.pdf", caption="../report/fig10.rst", category="Figure 10: predicting -ing"),
    log:
        "logs/plot_fig10.log",
    benchmark:
        "results/benchmarks/plot_fig10.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["casestudies"],
        code=code("plot_fig10"),
        styles=STYLES,
    script:
        "../scripts/plot_fig10.py"
