# Conventions, kept by every rule in workflow/rules/*.smk so that `snakemake --lint`
# stays clean (tests/test_workflow.py checks it)
# - log: "logs/<rule>/{model}.log" (per-model rules) or "logs/figures/<rule>.log", and the
#   script calls setup_logging(snakemake.log[0]) first;
# - benchmark: "results/benchmarks/<rule>/{model}.tsv" (or .../figures/<rule>.tsv);
# - conda: CONDA_ENV (one environment for the whole package, workflow/envs/stages.yaml;
#   add a new third-party dependency there and to pyproject.toml);
# - script: "../scripts/<rule>.py", a thin script calling <study>/rules.py;
# - threads: RUNTIME["threads"] and resources: gpu=GPU on rules that run a model;
# - priority: PRIORITY[<rule>] for the rules listed in PRIORITY;
# - no absolute paths, no environment variables read in rules files (PYTHONPATH is set
#   and declared with envvars: in the Snakefile);
# - figures and tables: output wrapped in report(..., caption="../report/<name>.rst",
#   category=...), and every figure/table added to ALL_TARGETS below; per-model tables
#   the README tells users to open go to ALL_TARGETS too (MODEL_TABLES);
# - input functions and other helpers live here (or in the package), never in a file
#   with rules ("Mixed rules and functions" lint; it also fires on a comment line with
#   the word rule, a space and later a colon).
from stages_of_inference.core.models import ModelSpec, job_gpus, max_positions, n_layers  # noqa: E402
from stages_of_inference.robustness.rules import chunk_layers, chunk_name  # noqa: E402

CONDA_ENV = "../envs/stages.yaml"  # relative to workflow/rules/
MODELS = {name: ModelSpec.from_config(name, entry) for name, entry in config["models"].items()}
N_LAYERS = {name: n_layers(spec) for name, spec in MODELS.items()}
KINDS = config["interventions"]["kinds"]
RUNTIME = config["runtime"]
# GPUs per model-running job, from runtime.device (auto: is an NVIDIA driver present?)
GPU = job_gpus(RUNTIME["device"])
# Scheduling: jobs that unblock others or run longest start first (`priority:`), so that
# on a few cores the last minutes are not one long job running alone (the default run
# on 2 cores ended with seqcont_circuits alone for 70 s before this).
PRIORITY = {"tokenize": 100, "seqcont_prompts": 100, "intervene": 50, "seqcont_circuits": 50,
            "neurons": 45, "ing_neurons": 45, "ing_activations": 40, "self_repair": 40, "extract": 40,
            "seqcont_effects": 30, "subjoiner": 30}

# Checked when the DAG is built, not inside a job minutes later.
config_check(checks.check_seq_len, config["corpus"]["seq_len"],
             {name: max_positions(spec) for name, spec in MODELS.items()})
for _warning in checks.subset_warnings(config["corpus"], "self_repair", config.get("self_repair")):
    print(f"Config warning: {_warning}", file=sys.stderr)


def chunks(model, kind):
    return [
        chunk_name(a, b)
        for a, b in chunk_layers(N_LAYERS[model], kind, config["interventions"]["layers_per_job"])
    ]


def chunk_files(wildcards):
    return [
        f"results/{wildcards.model}/interventions/{kind}/{chunk}.parquet"
        for kind in KINDS
        for chunk in chunks(wildcards.model, kind)
    ]


wildcard_constraints:
    model="|".join(sorted(MODELS)),
    kind="drop|swap",
    chunk=r"\d{3}-\d{3}",


# The per-model tables the README tells users to open (results/{model}/...).
MODEL_TABLES = [
    "interventions.parquet",
    "interventions_summary.parquet",
    "layer_stats.parquet",
    "layer_stats_tokens.parquet",
    "neurons.parquet",
    *(f"subjoiner_{name}.parquet" for name in ("prompts", "scores", "examples")),
    *(f"ing_{name}.parquet" for name in ("neurons", "vocab", "prompts", "activations", "probes")),
    *(f"self_repair{name}.parquet" for name in ("", "_tokens", "_neurons")),
    *(f"seqcont_{name}.parquet" for name in ("prompts", "counts", "tasks", "components", "successor",
                                             "circuits", "circuit_summary", "overlap")),
    *(f"concept_{name}.parquet" for name in ("sentences", "sae", "sae_training", "sae_features", "probes",
                                             "methods", "findings")),
]

ALL_TARGETS = [
    *(f"results/{model}/{table}" for model in MODELS for table in MODEL_TABLES),
    "figures/fig3.pdf",
    "figures/table_robustness.md",
    "figures/table_robustness.csv",
    *(f"figures/fig{n}.pdf" for n in (4, 5, 6, 7, 8)),
    "figures/table2.md",
    "figures/table2.csv",
    "figures/fig9.pdf",
    "figures/fig10.pdf",
    "figures/self_repair.pdf",
    "figures/self_repair_tokens.pdf",
    "figures/seqcont_tasks.pdf",
    "figures/seqcont_heads.pdf",
    "figures/seqcont_circuits.pdf",
    "figures/sae_training.pdf",
    "figures/concept_methods.pdf",
]


# The concepts study's stimulus files (workflow/rules/concepts.smk)
CONCEPTS = config.get("concepts", {})
CONCEPT_STIMULI = os.path.join(workflow.basedir, CONCEPTS.get("stimuli", "workflow/resources/concepts"))


def concept_stimulus_files(wildcards):
    return [
        os.path.join(CONCEPT_STIMULI, f"{concept}_{side}.txt")
        for concept in CONCEPTS.get("concepts", ["success", "danger"])
        for side in ("positive", "negative")
    ]
