rule intervene:
    """Drop or swap every layer of a chunk; one baseline pass per batch, prefix-cached."""
    input:
        model="results/models/{model}/manifest.json",
        tokens="results/{model}/tokens.pt",
        record="results/{model}/tokens.json",
    output:
        "results/{model}/interventions/{kind}/{chunk}.parquet",
    params:
        runtime=RUNTIME,
        batch_size=config["interventions"]["batch_size"],
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    log:
        "logs/intervene/{model}/{kind}/{chunk}.log",
    benchmark:
        "results/benchmarks/intervene/{model}/{kind}/{chunk}.tsv"
    script:
        "../scripts/intervene.py"


rule aggregate:
    """All chunks of a model: per-token table and per-(kind, layer) mean and SE."""
    input:
        chunk_files,
    output:
        tokens="results/{model}/interventions.parquet",
        summary="results/{model}/interventions_summary.parquet",
    params:
        n_layers=lambda wc: N_LAYERS[wc.model],
    log:
        "logs/aggregate/{model}.log",
    benchmark:
        "results/benchmarks/aggregate/{model}.tsv"
    script:
        "../scripts/aggregate.py"
