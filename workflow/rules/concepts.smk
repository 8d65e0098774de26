# Concept features (study: SAE + RSA feature selection; seed: sae-rsa-concept-features).
# concept_stimuli runs the model once per model (corpus tokens for the SAE, stimulus
# sentences); concept_sae trains the SAE; concept_probes selects features and fits probes;
# the figure rules only read the tables.
SAE = CONCEPTS["sae"]


rule concept_stimuli:
    """Residual stream entering concepts.layer (default the middle block): corpus tokens
    for SAE training and the first concepts.window tokens of every stimulus sentence."""
    input:
        manifest="results/models/{model}/manifest.json",
        stimuli=concept_stimulus_files,
    output:
        residuals=temp("results/{model}/concept_residuals.safetensors"),
        patterns="results/{model}/concept_stimuli.safetensors",
        sentences="results/{model}/concept_sentences.parquet",
    log:
        "logs/concept_stimuli/{model}.log",
    benchmark:
        "results/benchmarks/concept_stimuli/{model}.tsv"
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        corpus=config["corpus"],
        settings={
            **pick(CONCEPTS, "concepts", "layer", "window"),
            "sae": pick(SAE, "n_sequences", "seq_len", "corpus_seed"),
        },
        code=code("concept_stimuli"),
        numerics=NUMERICS,
    script:
        "../scripts/concept_stimuli.py"


rule concept_sae:
    """Sparse autoencoder on the corpus residuals (safetensors + JSON config), its training
    curve, held-out quality and per-feature firing rates."""
    input:
        residuals="results/{model}/concept_residuals.safetensors",
    output:
        sae="results/{model}/concept_sae.safetensors",
        config="results/{model}/concept_sae.json",
        training="results/{model}/concept_sae_training.parquet",
        quality="results/{model}/concept_sae.parquet",
        features="results/{model}/concept_sae_features.parquet",
    log:
        "logs/concept_sae/{model}.log",
    benchmark:
        "results/benchmarks/concept_sae/{model}.tsv"
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    params:
        settings={
            "sae": pick(
                SAE,
                "expansion",
                "kind",
                "k",
                "l1_coeff",
                "aux_k",
                "dead_tokens",
                "epochs",
                "batch_size_tokens",
                "lr",
                "outlier_norm",
                "holdout_fraction",
                "seed",
            )
        },
        code=code("concept_sae"),
    script:
        "../scripts/concept_sae.py"


rule concept_probes:
    """{raw, SAE} x {max activation, RSA categorical, RSA discriminative}: top-k features
    on each training split (RSA refuses features with too few defined pairs or a t of
    rounding noise: concepts.rsa_min_pairs, rsa_min_se), L1 logistic regression scored on
    the held-out pairs."""
    input:
        patterns="results/{model}/concept_stimuli.safetensors",
        sentences="results/{model}/concept_sentences.parquet",
        sae="results/{model}/concept_sae.safetensors",
        config="results/{model}/concept_sae.json",
    output:
        probes="results/{model}/concept_probes.parquet",
        methods="results/{model}/concept_methods.parquet",
        findings="results/{model}/concept_findings.parquet",
    log:
        "logs/concept_probes/{model}.log",
    benchmark:
        "results/benchmarks/concept_probes/{model}.tsv"
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    params:
        settings=pick(
            CONCEPTS, "concepts", "top_k", "rsa_min_pairs", "rsa_min_se", "n_splits", "test_fraction", "C", "seed"
        ),
        code=code("concept_probes"),
    script:
        "../scripts/concept_probes.py"


rule plot_sae_training:
    """SAE training curves and quality, per model."""
    input:
        training=expand("results/{model}/concept_sae_training.parquet", model=MODELS_OF["concepts"]),
        quality=expand("results/{model}/concept_sae.parquet", model=MODELS_OF["concepts"]),
        features=expand("results/{model}/concept_sae_features.parquet", model=MODELS_OF["concepts"]),
    output:
        report("figures/sae_training.pdf", caption="../report/sae_training.rst", category="Concept features"),
    log:
        "logs/plot_sae_training.log",
    benchmark:
        "results/benchmarks/plot_sae_training.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["concepts"],
        code=code("plot_sae_training"),
        styles=STYLES,
    script:
        "../scripts/plot_sae_training.py"


rule plot_concept_methods:
    """Held-out accuracy of every selection method and feature space, per concept and model."""
    input:
        methods=expand("results/{model}/concept_methods.parquet", model=MODELS_OF["concepts"]),
        findings=expand("results/{model}/concept_findings.parquet", model=MODELS_OF["concepts"]),
    output:
        report("figures/concept_methods.pdf", caption="../report/concept_methods.rst", category="Concept features"),
    log:
        "logs/plot_concept_methods.log",
    benchmark:
        "results/benchmarks/plot_concept_methods.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["concepts"],
        code=code("plot_concept_methods"),
        styles=STYLES,
    script:
        "../scripts/plot_concept_methods.py"
