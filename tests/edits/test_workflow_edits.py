"""The layer-edits targets built by the shared real snakemake run on the tiny config, the
windows of one block against the robustness study's per-token table, and what a setting or
a code edit reruns."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages_of_inference.core.digest import modules_of_script

from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[2]
MODELS = (("tiny-llama", 4), ("tiny-gpt2", 3), ("tiny-neox", 3))
FIGURES = ("cka", "layer_edits_windows", "layer_edits_painters", "layer_edits_repeat", "drop_predictors")


def reach(script):
    return {m.removeprefix("stages_of_inference.") for m in modules_of_script(REPO / f"workflow/scripts/{script}.py")}


def test_code_digests_separate_the_model_job_from_the_figures():
    model_job = reach("layer_edits")
    assert {"edits.compute", "edits.plans", "edits.cka", "edits.predictors", "robustness.compute",
            "core.engine"} <= model_job
    assert "edits.figures" not in model_job
    for figure in ("plot_cka", "plot_layer_edits", "plot_drop_predictors"):
        assert "edits.figures" in reach(figure) and "core.engine" not in reach(figure)


def test_tiny_workflow_builds_the_edits_targets(tiny_run):
    for name in FIGURES:
        pdf = tiny_run / f"figures/{name}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000, pdf
    for model, n in MODELS:
        res = tiny_run / "results" / model
        summary = pd.read_parquet(res / "layer_edits.parquet")
        win = summary[summary["family"] == "window"]
        for width in (1, 2, 3):  # edits.window_max: 3
            assert sorted(win.loc[win["width"] == width, "first"]) == list(range(n - width + 1))
        assert set(win.loc[win["width"] == 1, "source"]) == {"robustness"}
        assert set(summary.loc[summary["width"] > 1, "source"]) == {"edits"}
        assert (summary["n_tokens"] == 2 * 31).all()  # the first 2 sequences x positions 1..31
        rep = summary[(summary["family"] == "repeat") & (summary["width"] == 1)]
        assert sorted(rep["first"]) == list(range(n))
        cka = pd.read_parquet(res / "cka.parquet")
        grid = np.zeros((n, n))
        grid[cka["layer_a"], cka["layer_b"]] = cka["cka"]
        np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-9)
        np.testing.assert_allclose(grid, grid.T, atol=1e-9)
        predictors = pd.read_parquet(res / "drop_predictors.parquet")
        assert set(predictors["predictor"]) == {"block_influence", "angular_last", "angular_tokens"}
        assert len(pd.read_parquet(res / "drop_predictors_spearman.parquet")) == 3 * 3 * 2
        tokens = pd.read_parquet(res / "layer_edits_tokens.parquet")
        assert len(tokens) == len(summary) * 2 * 31
        assert (tiny_run / f"results/benchmarks/layer_edits/{model}.tsv").exists()
        assert (tiny_run / f"logs/layer_edits/{model}.log").exists()
    painters = pd.read_parquet(tiny_run / "results/tiny-llama/layer_edits.parquet").query("family == 'painters'")
    assert len(painters) == 6 and set(painters["blocks"]) >= {"0-1 3", "0-1 [2] [2] [2] 3"}  # s = 1: middle 2


def test_windows_of_one_block_are_the_robustness_drops_on_the_same_tokens(tiny_run):
    """Recomputed with pandas from the robustness study's per-token table."""
    for model, n in MODELS:
        res = tiny_run / "results" / model
        drops = pd.read_parquet(res / "interventions_tokens.parquet")
        drops = drops[(drops["kind"].astype(str) == "drop") & (drops["seq"] < 2)]  # all 32 positions: pos < 32
        want = drops.groupby("layer")["kl"].mean()
        summary = pd.read_parquet(res / "layer_edits.parquet")
        got = summary[(summary["family"] == "window") & (summary["width"] == 1)].set_index("first")["kl_mean"]
        np.testing.assert_allclose(got.sort_index().to_numpy(), want.sort_index().to_numpy(), rtol=1e-6)


@pytest.fixture()
def moved(tiny_run, tmp_path):
    dest = tmp_path / "project"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def planned(project, *extra):
    from test_rules import planned_rules

    return planned_rules(run_snakemake(project, "--configfile", "config/test.yaml", *extra, "-n", "--cores", "1",
                                       "all", timeout=600))


@pytest.mark.slow
def test_settings_and_code_rerun_only_the_edits_jobs(moved):
    overlay = moved / "overlay.yaml"
    overlay.write_text("edits: {batch_size: 1}\n")
    assert planned(moved, "overlay.yaml") == {}  # execution only
    overlay.write_text("edits: {window_max: 2}\n")
    rules = planned(moved, "overlay.yaml")
    assert rules.get("layer_edits") == 3
    # and the claims ledger, which reads the study's tables
    assert set(rules) - {"all"} == {"layer_edits", "plot_cka", "plot_layer_edits", "plot_drop_predictors",
                                    "claims"}, rules
    (moved / "src/stages_of_inference/edits/figures.py").open("a").write("\n# a style change\n")
    rules = planned(moved)
    assert set(rules) - {"all"} == {"plot_cka", "plot_layer_edits", "plot_drop_predictors"}, rules
