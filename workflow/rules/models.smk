rule prepare_model:
    """Materialise a model once (dequantize an embedded GGUF, build random weights, or
    check the Hugging Face cache) and write its manifest."""
    output:
        "results/models/{model}/manifest.json",
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    conda:
        CONDA_ENV
    params:
        spec=lambda wc: config["models"][wc.model],
        code=code("prepare_model"),
    script:
        "../scripts/prepare_model.py"
