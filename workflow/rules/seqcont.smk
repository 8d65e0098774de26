# Sequence-continuation circuits (after Lan, Torr & Barez and their repository
# apartresearch/seqcont_circuits): digits, number words, months and weekdays, plain and
# among random words. Tokenizer-only prompt generation, then two model rules (task metrics
# + per-component mean ablation + successor scores; circuit discovery), then three figures
# that only read tables.
SEQCONT = config["seqcont"]


rule seqcont_prompts:
    """Seeded task prompts and their matched corrupted prompts; only prompts whose items
    and answer are single tokens for the model's tokenizer, equal length per task."""
    input:
        manifest="results/models/{model}/manifest.json",
    output:
        prompts="results/{model}/seqcont_prompts.parquet",
        counts="results/{model}/seqcont_counts.parquet",
    log:
        "logs/seqcont_prompts/{model}.log",
    benchmark:
        "results/benchmarks/seqcont_prompts/{model}.tsv"
    priority: PRIORITY["seqcont_prompts"]
    conda:
        CONDA_ENV
    params:
        settings=pick(SEQCONT, "tasks", "circuit_tasks", "n_items", "separator", "n_prompts", "corruption", "seed"),
        code=code("seqcont_prompts"),
    script:
        "../scripts/seqcont_prompts.py"


rule seqcont_components:
    """Accuracy and logit difference per task; mean ablation of every head and MLP (one
    engine pass per layer, all heads batched); every head's OV successor score."""
    input:
        manifest="results/models/{model}/manifest.json",
        prompts="results/{model}/seqcont_prompts.parquet",
    output:
        tasks="results/{model}/seqcont_tasks.parquet",
        components="results/{model}/seqcont_components.parquet",
        successor="results/{model}/seqcont_successor.parquet",
    log:
        "logs/seqcont_components/{model}.log",
    benchmark:
        "results/benchmarks/seqcont_components/{model}.tsv"
    priority: PRIORITY["seqcont_components"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        settings=pick(SEQCONT, "tasks", "successor_top_k"),
        code=code("seqcont_components"),
        numerics=NUMERICS,
    script:
        "../scripts/seqcont_components.py"


rule seqcont_circuits:
    """Iterative mean-ablation pruning (a removal is kept while the logit difference stays
    above threshold x clean; backward and forward sweeps until nothing changes) per circuit
    task and seeded removal order; re-check of each circuit."""
    input:
        manifest="results/models/{model}/manifest.json",
        prompts="results/{model}/seqcont_prompts.parquet",
    output:
        circuits="results/{model}/seqcont_circuits.parquet",
        summary="results/{model}/seqcont_circuit_summary.parquet",
    log:
        "logs/seqcont_circuits/{model}.log",
    benchmark:
        "results/benchmarks/seqcont_circuits/{model}.tsv"
    priority: PRIORITY["seqcont_circuits"]
    conda:
        CONDA_ENV
    threads: RUNTIME["threads"]
    resources:
        gpu=GPU,
    params:
        settings=pick(SEQCONT, "circuit_tasks", "threshold", "sweeps", "n_orders"),
        code=code("seqcont_circuits"),
        numerics=NUMERICS,
    script:
        "../scripts/seqcont_circuits.py"


rule seqcont_overlap:
    """Tables only: components shared by the tasks' circuits, with their successor scores."""
    input:
        circuits="results/{model}/seqcont_circuits.parquet",
        successor="results/{model}/seqcont_successor.parquet",
    output:
        "results/{model}/seqcont_overlap.parquet",
    log:
        "logs/seqcont_overlap/{model}.log",
    benchmark:
        "results/benchmarks/seqcont_overlap/{model}.tsv"
    conda:
        CONDA_ENV
    params:
        successor_score=SEQCONT["successor_score"],
        code=code("seqcont_overlap"),
    script:
        "../scripts/seqcont_overlap.py"


rule plot_seqcont_tasks:
    """Accuracy and logit difference per task and model."""
    input:
        tasks=expand("results/{model}/seqcont_tasks.parquet", model=MODELS_OF["seqcont"]),
        counts=expand("results/{model}/seqcont_counts.parquet", model=MODELS_OF["seqcont"]),
    output:
        report(
            "figures/seqcont_tasks.pdf",
            caption="../report/seqcont_tasks.rst",
            category="Sequence-continuation circuits",
        ),
    log:
        "logs/plot_seqcont_tasks.log",
    benchmark:
        "results/benchmarks/plot_seqcont_tasks.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["seqcont"],
        code=code("plot_seqcont_tasks"),
        styles=STYLES,
    script:
        "../scripts/plot_seqcont_tasks.py"


rule plot_seqcont_heads:
    """Mean-ablation effect map (layer x head, MLP) per task and model."""
    input:
        components=expand("results/{model}/seqcont_components.parquet", model=MODELS_OF["seqcont"]),
    output:
        report(
            "figures/seqcont_heads.pdf",
            caption="../report/seqcont_heads.rst",
            category="Sequence-continuation circuits",
        ),
    log:
        "logs/plot_seqcont_heads.log",
    benchmark:
        "results/benchmarks/plot_seqcont_heads.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["seqcont"],
        code=code("plot_seqcont_heads"),
        styles=STYLES,
    script:
        "../scripts/plot_seqcont_heads.py"


rule plot_seqcont_circuits:
    """Each task's circuit, the overlap across tasks, successor scores, circuit sizes."""
    input:
        circuits=expand("results/{model}/seqcont_circuits.parquet", model=MODELS_OF["seqcont"]),
        summary=expand("results/{model}/seqcont_circuit_summary.parquet", model=MODELS_OF["seqcont"]),
        overlap=expand("results/{model}/seqcont_overlap.parquet", model=MODELS_OF["seqcont"]),
        successor=expand("results/{model}/seqcont_successor.parquet", model=MODELS_OF["seqcont"]),
    output:
        report(
            "figures/seqcont_circuits.pdf",
            caption="../report/seqcont_circuits.rst",
            category="Sequence-continuation circuits",
        ),
    log:
        "logs/plot_seqcont_circuits.log",
    benchmark:
        "results/benchmarks/plot_seqcont_circuits.tsv"
    conda:
        CONDA_ENV
    params:
        models=MODELS_OF["seqcont"],
        successor_score=SEQCONT["successor_score"],
        code=code("plot_seqcont_circuits"),
        styles=STYLES,
    script:
        "../scripts/plot_seqcont_circuits.py"
