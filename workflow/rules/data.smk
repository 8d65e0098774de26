rule corpus:
    """Seeded fixed-length token sequences from the configured corpus, recorded."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        corpus="results/{model}/corpus.pt",
        record="results/{model}/corpus.json",
    log:
        "logs/corpus/{model}.log",
    benchmark:
        "results/benchmarks/corpus/{model}.tsv"
    priority: PRIORITY["corpus"]
    conda:
        CONDA_ENV
    params:
        corpus=config["corpus"],
        code=code("corpus"),
    script:
        "../scripts/corpus.py"
