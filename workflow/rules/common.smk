# Conventions, kept by every rule in workflow/rules/*.smk (tests/test_workflow.py and
# tests/test_rules.py check them; `snakemake --lint` stays clean).
#
# Names: one name for one thing, from config key to rule, script, function, file and column.
# - A rule that computes per-model results is named after its main output under
#   results/{model}/ (`layer_stats` writes layer_stats.parquet and layer_stats_tokens.parquet;
#   `self_repair` writes self_repair*.parquet); a per-token table is <name>_tokens.parquet next
#   to its summary <name>.parquet.
# - A rule that draws figures/<name>.pdf is `plot_<name>` (plot_fig3, plot_self_repair); a rule
#   that writes a table figures/<name>.{md,csv} is `<name>` (table_robustness, table2).
# - Its script is workflow/scripts/<rule>.py, a paragraph: `with job(snakemake) as runtime:`
#   and one call of <study>.rules.<rule>(...) whose keyword names are the rule's input,
#   output (out_<name>), params and wildcard names.
# - log: logs/<rule>/{model}.log (per model) or logs/<rule>.log; benchmark: the same path
#   under results/benchmarks/ with .tsv.
# - A study's config section reaches its function as `settings` (a model's spec as `spec`).
#
# Params hold exactly what the outputs depend on, so that a change reruns exactly the jobs
# it affects (tests/test_rules.py):
# - code=code("<rule>"): a digest of the package source the rule's script can run
#   (core/digest.py); editing a study's compute.py reruns that study's jobs, nothing else;
# - numerics=NUMERICS on rules that run a model (dtype, matmul_precision change numbers);
# - settings=pick(<section>, keys...): only the config keys the rule's outputs depend on. Keys
#   that cannot change a result (runtime.device/threads/compile/attn_implementation, batch
#   sizes) are read by the script from snakemake.config and are never params; figure-only
#   keys are params of the figure rule only;
# - no absolute path: a copied or moved project reruns nothing.
#
# Other conventions:
# - conda: CONDA_ENV (one environment for the package, workflow/envs/stages.yaml);
# - threads: RUNTIME["threads"] and resources: gpu=GPU on every rule that runs a model (the
#   SLURM profile has a set-resources entry for each; tests/test_slurm_profile.py);
# - priority: PRIORITY[<rule>] for the rules listed in PRIORITY;
# - figures and tables: output wrapped in report(..., caption="../report/<name>.rst",
#   category=...), and every figure/table in ALL_TARGETS below; per-model tables users open
#   are in MODEL_TABLES;
# - input functions and other helpers live here (or in the package), never in a file with
#   rules ("Mixed rules and functions" lint; it also fires on a comment line with the word
#   rule, a space and later a colon).
from stages_of_inference.claims.rules import claim_inputs  # noqa: E402
from stages_of_inference.core.digest import code_digest  # noqa: E402
from stages_of_inference.core.models import STUDIES, ModelSpec, job_gpus, model_shape  # noqa: E402
from stages_of_inference.core.plotting import model_styles  # noqa: E402
from stages_of_inference.robustness.rules import chunk_layers, chunk_name  # noqa: E402

CONDA_ENV = "../envs/stages.yaml"  # relative to workflow/rules/
MODELS = {name: config_check(ModelSpec.from_config, name, entry) for name, entry in config["models"].items()}
# The models of each study (models.<name>.studies; the random-weight control joins the paper's
# figures only), and one drawing style per model for every figure (a figure rule's param).
MODELS_OF = {study: [name for name, spec in MODELS.items() if spec.joins(study)] for study in STUDIES}
STYLES = model_styles(config["models"])
SHAPES = {name: config_check(model_shape, spec) for name, spec in MODELS.items()}
N_LAYERS = {name: shape.n_layers for name, shape in SHAPES.items()}
KINDS = config["interventions"]["kinds"]
RUNTIME = config["runtime"]
# Settings that change a model's numbers beyond rounding: a param of every model rule.
NUMERICS = {key: RUNTIME[key] for key in ("dtype", "matmul_precision")}


# GPUs per model-running job, from runtime.device (auto: on a cluster, or where this machine
# has an NVIDIA driver; cpu: none, and no profile asks for one on its own). A function: the
# executor (local or a cluster's) is known only when the jobs are made, not when this file
# is read (Snakemake sets workflow.executor_plugin after parsing).
def GPU(wildcards):
    return job_gpus(RUNTIME["device"], cluster=not workflow.local_exec)


# Scheduling: jobs that unblock others or run longest start first (`priority:`), so that
# on a few cores the last minutes are not one long job running alone.
PRIORITY = {
    "corpus": 100,
    "seqcont_prompts": 100,
    "interventions_chunk": 50,
    "seqcont_circuits": 50,
    "neurons": 45,
    "ing_neurons": 45,
    "ing_activations": 40,
    "self_repair": 40,
    "layer_stats": 40,
    "seqcont_components": 30,
    "subjoiner": 30,
    "layer_edits": 30,
}

# Checked when the DAG is built, not inside a job minutes later (one line each).
config_check(checks.check_against_shapes, config, SHAPES, _SOURCES)
config_check(checks.check_device, RUNTIME["device"], workflow)
for _warning in checks.subset_warnings(config["corpus"], "self_repair", config.get("self_repair")):
    checks.warn_once(_warning)


def code(script):
    """Digest of the package source that workflow/scripts/<script>.py can run."""
    return code_digest(os.path.join(workflow.basedir, "workflow", "scripts", f"{script}.py"))


def pick(section, *keys):
    """The keys of a config section that a rule's outputs depend on (its params)."""
    return {key: section[key] for key in keys if key in section}


def chunks(model, kind):
    return [chunk_name(a, b) for a, b in chunk_layers(N_LAYERS[model], kind, config["interventions"]["layers_per_job"])]


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


# The per-model tables users open (results/{model}/...), per study.
MODEL_TABLES = {
    "robustness": ["interventions.parquet", "interventions_tokens.parquet"],
    "depth": ["layer_stats.parquet", "layer_stats_tokens.parquet", "neurons.parquet"],
    "casestudies": [
        *(f"subjoiner_{name}.parquet" for name in ("prompts", "scores", "examples")),
        *(f"ing_{name}.parquet" for name in ("neurons", "vocab", "prompts", "activations", "probes")),
    ],
    "self_repair": [f"self_repair{name}.parquet" for name in ("", "_tokens", "_neurons")],
    "seqcont": [
        f"seqcont_{name}.parquet"
        for name in ("prompts", "counts", "tasks", "components", "successor", "circuits", "circuit_summary", "overlap")
    ],
    "concepts": [
        f"concept_{name}.parquet"
        for name in ("sentences", "sae", "sae_training", "sae_features", "probes", "methods", "findings")
    ],
    "edits": [
        "cka.parquet",
        "layer_edits.parquet",
        "layer_edits_tokens.parquet",
        "drop_predictors.parquet",
        "drop_predictors_spearman.parquet",
    ],
}
# The figures and tables of each study (figures/...).
STUDY_FIGURES = {
    "robustness": ["fig3.pdf", "table_robustness.md", "table_robustness.csv"],
    "depth": [*(f"fig{n}.pdf" for n in (4, 5, 6, 7, 8)), "table2.md", "table2.csv"],
    "casestudies": ["fig9.pdf", "fig10.pdf"],
    "self_repair": ["self_repair.pdf", "self_repair_tokens.pdf"],
    "seqcont": ["seqcont_tasks.pdf", "seqcont_heads.pdf", "seqcont_circuits.pdf"],
    "concepts": ["sae_training.pdf", "concept_methods.pdf"],
    "edits": [
        "cka.pdf",
        "layer_edits_windows.pdf",
        "layer_edits_painters.pdf",
        "layer_edits_repeat.pdf",
        "drop_predictors.pdf",
    ],
}

ALL_TARGETS = [
    *(f"results/{model}/{table}" for study in STUDIES for model in MODELS_OF[study] for table in MODEL_TABLES[study]),
    *(f"figures/{name}" for study in STUDIES if MODELS_OF[study] for name in STUDY_FIGURES[study]),
    "figures/claims.md",
    "figures/claims.csv",
]


# The concepts study's stimulus files, relative to the working directory (no absolute
# path: a moved project keeps its inputs' names).
CONCEPTS = config["concepts"]
CONCEPT_STIMULI = os.path.relpath(os.path.join(workflow.basedir, CONCEPTS["stimuli"]))


def concept_stimulus_files(wildcards):
    return [
        os.path.join(CONCEPT_STIMULI, f"{concept}_{side}.txt")
        for concept in CONCEPTS["concepts"]
        for side in ("positive", "negative")
    ]
