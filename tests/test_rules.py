"""A rule's outputs depend on its inputs, params and code, and on nothing else: a code edit
reruns exactly the jobs whose code changed, a setting reruns only what it changes, and a
moved project reruns nothing. Real dry runs on a copy of the tiny run's project."""
import re
import shutil
from pathlib import Path

import pytest

from stages_of_inference.core.digest import code_digest, modules_of_script

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow/scripts"
PKG = "stages_of_inference."


def reach(script):
    return {m.removeprefix(PKG) for m in modules_of_script(SCRIPTS / f"{script}.py")}


def test_digest_follows_what_a_script_runs_and_nothing_else():
    model_rule = reach("self_repair")
    assert {"self_repair.compute", "self_repair.rules", "core.engine", "core.models"} <= model_rule
    assert not any(m.startswith(("seqcont", "concepts", "depth")) for m in model_rule), model_rule
    assert "self_repair.figures" not in model_rule  # a figure edit does not rerun the model job
    figure_rule = reach("plot_self_repair")
    assert {"self_repair.figures", "self_repair.rules"} <= figure_rule
    assert "self_repair.compute" not in figure_rule and "core.engine" not in figure_rule, figure_rule


def test_digest_changes_with_the_code_and_only_then(tmp_path):
    from conftest import project_copy

    copy = project_copy(tmp_path / "p")
    script = copy / "workflow/scripts/self_repair.py"
    before = code_digest(script)
    assert code_digest(script) == before  # deterministic; paths play no part
    assert code_digest(SCRIPTS / "self_repair.py") == before  # another copy of the project: the same
    import stages_of_inference.core.digest as digest

    # edit the copy's compute module: the digest computed from the copy's sources changes
    root = digest.ROOT
    try:
        digest.ROOT = copy / "src/stages_of_inference"
        digest._parsed.cache_clear()
        same = code_digest(script)
        (copy / "src/stages_of_inference/self_repair/compute.py").open("a").write("\n# edited\n")
        edited = code_digest(script)
    finally:
        digest.ROOT = root
        digest._parsed.cache_clear()
    assert same == before and edited != before


def test_every_rule_with_a_script_carries_its_code_digest():
    text = "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    blocks = re.split(r"\n(?=rule \w+:|    rule:)", text)
    for block in blocks:
        script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', block)
        if script:
            assert f'code=code("{script.group(1)}")' in block, block[:200]
            assert (SCRIPTS / f"{script.group(1)}.py").exists()


def planned_rules(proc) -> dict[str, int]:
    """Rule -> job count from a dry run's job table ({} when nothing is to be done)."""
    out = proc.stdout
    if "Nothing to be done" in out + proc.stderr:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture()
def moved(tiny_run, tmp_path):
    """The tiny run's whole project (code, config, results, .snakemake), moved elsewhere."""
    dest = tmp_path / "elsewhere" / "project"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def dry(project, *extra):
    return planned_rules(run_snakemake(project, "--configfile", "config/test.yaml", *extra, "-n", "--cores", "1", "all",
                                       timeout=600))


@pytest.mark.slow
def test_moved_project_reruns_nothing(moved):
    assert dry(moved) == {}


@pytest.mark.slow
def test_editing_a_study_reruns_that_study_only(moved):
    (moved / "src/stages_of_inference/self_repair/compute.py").open("a").write("\n# a code change\n")
    rules = dry(moved)
    assert rules.get("self_repair") == 3, rules  # three tiny models
    # and the claims ledger, which reads the study's tables
    assert set(rules) <= {"self_repair", "plot_self_repair", "plot_self_repair_tokens", "claims", "all"}, rules


@pytest.mark.slow
def test_editing_a_figure_module_reruns_its_figures_only(moved):
    (moved / "src/stages_of_inference/robustness/figures.py").open("a").write("\n# a style change\n")
    rules = dry(moved)
    assert set(rules) - {"all"} <= {"plot_fig3", "table_robustness"} and "plot_fig3" in rules, rules


@pytest.mark.slow
def test_settings_rerun_only_what_they_change(moved):
    overlay = moved / "overlay.yaml"
    overlay.write_text("runtime: {threads: 2, compile: false, attn_implementation: eager}\n"
                       "interventions: {batch_size: 3}\nself_repair: {batch_size: 3}\n")
    assert dry(moved, "overlay.yaml") == {}  # execution settings: nothing to redo
    overlay.write_text("self_repair: {figure_heads: 2}\n")
    assert set(dry(moved, "overlay.yaml")) == {"plot_self_repair_tokens", "all"}
    overlay.write_text("seqcont: {threshold: 0.7}\n")
    rules = dry(moved, "overlay.yaml")
    assert set(rules) - {"all"} == {"seqcont_circuits", "seqcont_overlap", "plot_seqcont_circuits", "claims"}, rules
    overlay.write_text("concepts: {C: 0.5}\n")
    assert set(dry(moved, "overlay.yaml")) - {"all"} == {"concept_probes", "plot_concept_methods", "claims"}
    overlay.write_text("runtime: {dtype: bfloat16}\n")  # changes every model's numbers
    assert "interventions_chunk" in dry(moved, "overlay.yaml")
