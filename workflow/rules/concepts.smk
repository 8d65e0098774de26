# Concept features (study: SAE + RSA feature selection; seed: sae-rsa-concept-features).
# concept_activations runs the model once per model (corpus tokens for the SAE, stimulus
# sentences); concept_sae trains the SAE; concept_probes selects features and fits probes;
# the figure rules only read the tables.

rule concept_activations:
    """Residual stream entering concepts.layer (default the middle block): corpus tokens
    for SAE training and the first concepts.window tokens of every stimulus sentence."""
    input:
        model="results/models/{model}/manifest.json",
        stimuli=concept_stimulus_files,
    output:
        residuals=temp("results/{model}/concept_residuals.safetensors"),
        patterns="results/{model}/concept_stimuli.safetensors",
        sentences="results/{model}/concept_sentences.parquet",
    params:
        corpus=config["corpus"],
        concepts=CONCEPTS,
        runtime=RUNTIME,
        stimuli=CONCEPT_STIMULI,
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    log:
        "logs/concept_activations/{model}.log",
    benchmark:
        "results/benchmarks/concept_activations/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/concept_activations.py"


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
    params:
        concepts=CONCEPTS,
        runtime=RUNTIME,
    threads: RUNTIME["threads"]
    log:
        "logs/concept_sae/{model}.log",
    benchmark:
        "results/benchmarks/concept_sae/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/concept_sae.py"


rule concept_probes:
    """{raw, SAE} x {max activation, RSA categorical, RSA discriminative}: top-k features
    on each training split, L1 logistic regression scored on the held-out pairs."""
    input:
        patterns="results/{model}/concept_stimuli.safetensors",
        sentences="results/{model}/concept_sentences.parquet",
        sae="results/{model}/concept_sae.safetensors",
        config="results/{model}/concept_sae.json",
    output:
        probes="results/{model}/concept_probes.parquet",
        methods="results/{model}/concept_methods.parquet",
        findings="results/{model}/concept_findings.parquet",
    params:
        concepts=CONCEPTS,
        runtime=RUNTIME,
    threads: RUNTIME["threads"]
    log:
        "logs/concept_probes/{model}.log",
    benchmark:
        "results/benchmarks/concept_probes/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/concept_probes.py"


rule fig_sae_training:
    """SAE training curves and quality, per model."""
    input:
        training=expand("results/{model}/concept_sae_training.parquet", model=MODELS),
        quality=expand("results/{model}/concept_sae.parquet", model=MODELS),
        features=expand("results/{model}/concept_sae_features.parquet", model=MODELS),
    output:
        report("figures/sae_training.pdf", caption="../report/sae_training.rst", category="Concept features"),
    params:
        models=list(MODELS),
    log:
        "logs/figures/sae_training.log",
    benchmark:
        "results/benchmarks/figures/sae_training.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/fig_sae_training.py"


rule fig_concept_methods:
    """Held-out accuracy of every selection method and feature space, per concept and model."""
    input:
        methods=expand("results/{model}/concept_methods.parquet", model=MODELS),
        findings=expand("results/{model}/concept_findings.parquet", model=MODELS),
    output:
        report("figures/concept_methods.pdf", caption="../report/concept_methods.rst", category="Concept features"),
    params:
        models=list(MODELS),
    log:
        "logs/figures/concept_methods.log",
    benchmark:
        "results/benchmarks/figures/concept_methods.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/fig_concept_methods.py"
