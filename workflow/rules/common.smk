import os
import sys

# The library lives in src/; jobs (local or on a cluster) find it through PYTHONPATH
# even when the package was not pip-installed.
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)

from stages_of_inference.core.models import ModelSpec, n_layers  # noqa: E402
from stages_of_inference.robustness.rules import chunk_layers, chunk_name  # noqa: E402

MODELS = {name: ModelSpec.from_config(name, entry) for name, entry in config["models"].items()}
N_LAYERS = {name: n_layers(spec) for name, spec in MODELS.items()}
KINDS = config["interventions"]["kinds"]
RUNTIME = config["runtime"]


def uses_gpu():
    device = RUNTIME["device"]
    if device == "auto":
        return int(os.path.exists("/dev/nvidiactl"))
    return int(device.startswith("cuda"))


GPU = uses_gpu()


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


ALL_TARGETS = [
    "figures/fig3.pdf",
    "figures/table_robustness.md",
    "figures/table_robustness.csv",
    *(f"figures/fig{n}.pdf" for n in (4, 5, 6, 7, 8)),
    "figures/table2.md",
    "figures/table2.csv",
    "figures/fig9.pdf",
    "figures/fig10.pdf",
    "figures/sae_training.pdf",
    "figures/concept_methods.pdf",
]
