rule tokenize:
    """Seeded fixed-length token sequences from the configured corpus, recorded."""
    input:
        model="results/models/{model}/manifest.json",
    output:
        tokens="results/{model}/tokens.pt",
        record="results/{model}/tokens.json",
    params:
        corpus=config["corpus"],
    priority: PRIORITY["tokenize"]
    log:
        "logs/tokenize/{model}.log",
    benchmark:
        "results/benchmarks/tokenize/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/tokenize.py"
