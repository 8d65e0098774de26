"""Every rule that runs a model is covered by the SLURM profile: read from the rules files
(a model-running rule declares `resources: gpu=GPU`) and the profile, no cluster needed."""
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def model_rules() -> set[str]:
    rules = set()
    for path in (REPO / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        for block in re.split(r"\n(?=rule \w+:|    rule:)", text):
            name = re.match(r"rule (\w+):", block)
            if name and re.search(r"^\s+gpu=GPU,", block, re.M):
                rules.add(name.group(1))
    return rules


def test_every_model_rule_has_a_slurm_entry():
    rules = model_rules()
    assert {"interventions_chunk", "layer_stats", "neurons", "self_repair", "seqcont_components",
            "seqcont_circuits", "concept_stimuli", "subjoiner", "ing_activations"} <= rules
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    entries = profile["set-resources"]
    missing = sorted(rules - set(entries))
    assert not missing, f"model rules without a set-resources entry in profiles/slurm/config.yaml: {missing}"
    for rule in rules:
        entry = entries[rule]
        assert entry.get("slurm_partition") == "gpu" and entry.get("runtime", 0) >= 60 and entry.get("mem_mb"), rule


def test_profile_never_asks_for_a_gpu_itself():
    """The rules' own `gpu` resource follows runtime.device (0 with cpu); the profile must not
    override it with gpu: 1."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for rule, entry in profile["set-resources"].items():
        assert "gpu" not in entry, rule
    assert "gpu" not in profile.get("default-resources", {})


def test_profile_names_only_existing_rules():
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    names = set(re.findall(r"^rule (\w+):", text, re.M))
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for key in ("set-resources", "set-threads"):
        assert set(profile.get(key, {})) <= names, set(profile.get(key, {})) - names
