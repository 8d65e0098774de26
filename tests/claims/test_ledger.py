"""The ledger: registering claims, building it per model and per family, verdicts, and the
rule's files (CSV, Markdown, HTML); then the `claims` target of the shared tiny snakemake run."""
import math

import numpy as np
import pandas as pd
import pytest

from stages_of_inference.claims import ledger, rules
from stages_of_inference.claims.ledger import (
    COLUMNS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    VERDICTS,
    Finding,
    above,
    bootstrap_ci,
    build_ledger,
    claim,
    load_claims,
)


@pytest.fixture()
def fake_claims():
    """Two claims of a study of their own ("fake"), removed again afterwards."""
    added = []

    @claim(id="fake_mean_positive", text="The mean | is positive.", source="a test", study="fake",
           tables=("fake.parquet",), rule="HOLDS when the mean is above 0.")
    def mean_positive(tables):
        x = tables["fake.parquet"]["x"]
        value, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
        return Finding("mean of x", value, above(value - 2 * se, value + 2 * se, 0.0), value - 2 * se,
                       value + 2 * se, se, detail=f"n={len(x)}")

    @claim(id="fake_family_size", text="There are models.", source="a test", study="fake",
           tables=("fake.parquet",), rule="HOLDS with at least two models.", scope="family")
    def family_size(tables_by_model):
        n = len(tables_by_model)
        return Finding("models", float(n), HOLDS if n >= 2 else INCONCLUSIVE, detail=",".join(tables_by_model))

    added += ["fake_mean_positive", "fake_family_size"]
    yield mean_positive, family_size
    for cid in added:
        ledger.REGISTRY.pop(cid, None)


def fake_tables():
    return {"a": {"fake.parquet": pd.DataFrame({"x": [1.0, 1.2, 0.9, 1.1]})},
            "b": {"fake.parquet": pd.DataFrame({"x": [-1.0, -1.2, -0.9, -1.1]})},
            "c": {"fake.parquet": pd.DataFrame({"x": [1.0, -1.0, 0.5, -0.5]})}}


def test_build_ledger_runs_each_claim_on_each_model_of_its_study(fake_claims):
    led = build_ledger(fake_tables(), {"fake": ["a", "b", "c", "not-run"]})
    assert list(led.columns) == COLUMNS
    per_model = led[led["claim"] == "fake_mean_positive"].set_index("model")
    assert list(per_model.index) == ["a", "b", "c"]  # config order; a model without tables is left out
    assert per_model["verdict"].to_dict() == {"a": HOLDS, "b": FAILS, "c": INCONCLUSIVE}
    assert per_model.loc["a", "value"] == pytest.approx(1.05)
    fam = led[led["claim"] == "fake_family_size"]
    assert list(fam["model"]) == ["all models"] and fam["value"].iloc[0] == 3 and fam["detail"].iloc[0] == "a,b,c"
    # the paper's claims are registered, but no model is in their studies here: none is run
    assert set(led["claim"]) == {"fake_mean_positive", "fake_family_size"}
    assert "retained_accuracy_drop" in load_claims()


def test_a_study_without_models_is_skipped(fake_claims):
    assert build_ledger(fake_tables(), {"fake": [], "robustness": []}).empty
    only_a = build_ledger(fake_tables(), {"fake": ["a"]})
    assert only_a.loc[only_a["claim"] == "fake_family_size", "verdict"].item() == INCONCLUSIVE


def test_claims_are_checked_when_registered(fake_claims):
    with pytest.raises(ValueError, match="registered twice"):
        claim(id="fake_mean_positive", text="", source="", study="fake", tables=(), rule="")(lambda t: None)
    with pytest.raises(ValueError, match="scope"):
        claim(id="fake_x", text="", source="", study="fake", tables=(), rule="", scope="everything")
    with pytest.raises(ValueError, match="verdict"):
        Finding("s", 1.0, "maybe")
    assert set(VERDICTS) == {HOLDS, FAILS, INCONCLUSIVE}


def test_bootstrap_interval_covers_the_mean():
    rng = np.random.default_rng(1)
    groups = [rng.normal(2.0, 1.0, 20) for _ in range(30)]
    value, lo, hi, se = bootstrap_ci(groups, lambda gs: float(np.mean(np.concatenate(gs))))
    assert value == pytest.approx(np.mean(np.concatenate(groups)))
    assert lo < value < hi and 1.7 < lo and hi < 2.3
    assert se == pytest.approx(np.concatenate(groups).std() / np.sqrt(600), rel=0.3)


def write_results(root, tables):
    paths = []
    for model, named in tables.items():
        for name, df in named.items():
            path = root / "results" / model / name
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(path)
            paths.append(str(path))
    return paths


def test_rule_writes_csv_markdown_and_html(fake_claims, tmp_path):
    paths = write_results(tmp_path, fake_tables())
    out = {ext: tmp_path / f"figures/claims.{ext}" for ext in ("csv", "md", "html")}
    rules.claims(tables=paths, models_of={"fake": ["a", "b", "c"]}, out_csv=out["csv"], out_md=out["md"],
                 out_html=out["html"])
    csv = pd.read_csv(out["csv"])
    assert list(csv.columns) == COLUMNS and len(csv) == 4
    assert csv.loc[csv["model"] == "b", "verdict"].item() == FAILS
    md = out["md"].read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4
    assert all(line.count(" | ") == len(rules.SHOWN) - 1 for line in table[2:]), table  # the "|" is escaped
    assert "The mean \\| is positive." in md and md.count("HOLDS when the mean") == 1  # text on a claim's first row
    a = next(line for line in table if "| a |" in line)
    assert "1.05 [" in a and "holds" in a
    html = out["html"].read_text()
    assert html.count("<tr>") == 1 + 4 and "The mean | is positive." in html and "<td>b</td>" in html


def test_rule_with_no_model_writes_an_empty_ledger(tmp_path):
    out = {ext: tmp_path / f"claims.{ext}" for ext in ("csv", "md", "html")}
    rules.claims(tables=[], models_of={}, out_csv=out["csv"], out_md=out["md"], out_html=out["html"])
    assert list(pd.read_csv(out["csv"]).columns) == COLUMNS
    assert "no claim tested" in out["md"].read_text()


def test_inputs_are_every_table_of_every_claim_for_its_studys_models():
    models_of = {"robustness": ["m1", "ctrl"], "depth": ["m1"], "casestudies": [], "edits": ["m1"]}
    inputs = rules.claim_inputs(models_of)
    assert "results/ctrl/interventions_tokens.parquet" in inputs and "results/ctrl/model_info.json" in inputs
    assert "results/m1/layer_stats_tokens.parquet" in inputs and "results/m1/cka.parquet" in inputs
    assert not any("subjoiner" in p or "ing_probes" in p for p in inputs)  # no case-study model
    assert "results/ctrl/neurons.parquet" not in inputs  # ctrl is not in the depth study
    assert len(inputs) == len(set(inputs))


def test_values_format_with_their_interval():
    row = dict(value=0.8512, lo=0.83, hi=0.87, se=0.01)
    assert rules.fmt_value(row) == "0.851 [0.83, 0.87]"
    assert rules.fmt_value(dict(row, lo=math.nan, hi=math.nan)) == "0.851 ± 0.01 (SE)"
    assert rules.fmt_value(dict(value=math.nan, lo=math.nan, hi=math.nan, se=math.nan)) == "n/a"


# -- the workflow -----------------------------------------------------------------------------


def test_tiny_workflow_builds_the_ledger(tiny_run):
    csv = pd.read_csv(tiny_run / "figures/claims.csv")
    models = {"tiny-llama", "tiny-gpt2", "tiny-neox"}
    assert set(csv["model"]) == models | {"all models"}
    paper_claims = [c.id for c in load_claims().values() if c.study in ("robustness", "depth", "casestudies", "edits")]
    assert set(paper_claims) <= set(csv["claim"])
    assert set(csv["verdict"]) <= set(VERDICTS)
    # random weights: the family claim has no trained model to read
    assert csv.loc[csv["claim"] == "more_layers_more_robust", "verdict"].item() == INCONCLUSIVE
    assert (tiny_run / "figures/claims.md").read_text().startswith("# Claims ledger")
    assert (tiny_run / "figures/claims.html").exists()
    assert (tiny_run / "logs/claims.log").exists() and (tiny_run / "results/benchmarks/claims.tsv").exists()
