rule corpus:
    """Seeded fixed-length token sequences from the configured corpus, recorded."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
    params:
        corpus=config["corpus"],
        code=code("corpus"),
    priority: PRIORITY["corpus"]
    log:
        "logs/corpus/{model}.log",
    benchmark:
        "results/benchmarks/corpus/{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/corpus.py"
