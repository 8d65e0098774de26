from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stages_of_inference.concepts.compute import corrected_interval, findings, load_stimuli, pair_splits

STIMULI = Path(__file__).resolve().parents[2] / "workflow/resources/concepts"


def test_pair_splits_hold_out_whole_pairs_seeded():
    a = pair_splits(80, 20, 0.25, seed=0)
    assert a.shape == (20, 80) and (a.sum(1) == 20).all()
    assert np.array_equal(a, pair_splits(80, 20, 0.25, seed=0))
    assert not np.array_equal(a, pair_splits(80, 20, 0.25, seed=1))
    assert len({r.tobytes() for r in a}) == 20


def test_corrected_interval_hand_formula():
    v = np.array([0.7, 0.8, 0.75, 0.9, 0.65])
    mean, lo, hi = corrected_interval(v, n_train=120, n_test=40)
    half = stats.t.ppf(0.975, 4) * np.sqrt(v.var(ddof=1) * (1 / 5 + 40 / 120))
    assert mean == pytest.approx(v.mean()) and hi - mean == pytest.approx(half) and mean - lo == pytest.approx(half)


def test_findings_signs():
    rows = []
    for split in range(6):
        for space, base in (("raw", 0.6), ("sae", 0.7)):
            for method, bonus in (("maxact", 0.0), ("rsa_categorical", 0.1), ("rsa_discriminative", 0.15)):
                rows.append(dict(model="m", concept="c", space=space, method=method, split=split, n_train=120,
                                 n_test=40, test_accuracy=base + bonus + 0.01 * (split % 3)))
    full = findings(pd.DataFrame(rows))
    f = full[full.scope == "all"].set_index(["concept", "finding"])
    only_raw = full[(full.scope == "raw") & (full.concept == "c") & (full.finding == "rsa_vs_maxact")]
    assert only_raw["difference"].iloc[0] == pytest.approx(0.125)
    assert f.loc[("c", "rsa_vs_maxact"), "difference"] == pytest.approx(0.125)
    assert f.loc[("c", "sae_vs_raw"), "difference"] == pytest.approx(0.1)
    assert f.loc[("c", "discriminative_vs_categorical"), "difference"] == pytest.approx(0.05)
    assert f.loc[("pooled", "sae_vs_raw"), "holds"]


def test_shipped_stimuli_are_balanced_pairs():
    files = [str(STIMULI / f"{c}_{side}.txt") for c in ("success", "danger") for side in ("positive", "negative")]
    df = load_stimuli(files, ["success", "danger"])
    counts = df.groupby(["concept", "label"]).size()
    assert (counts == 80).all() and len(counts) == 4
    assert df["text"].is_unique
    # per concept the positives, then the negatives; line i of both files is pair i
    assert df["sentence_id"].tolist() == list(range(320))
    assert df["concept"].tolist() == ["success"] * 160 + ["danger"] * 160
    assert df["label"].tolist() == ([1] * 80 + [0] * 80) * 2
    assert df["pair_id"].tolist() == list(range(80)) * 4
    first = (STIMULI / "danger_negative.txt").read_text().splitlines()[0].strip()
    assert df.loc[(df.concept == "danger") & (df.label == 0) & (df.pair_id == 0), "text"].item() == first
    # the order of the file list does not matter; only the concepts asked for are read
    assert load_stimuli(files[::-1], ["success", "danger"]).equals(df)
    assert set(load_stimuli(files, ["danger"])["concept"]) == {"danger"}


def test_stimuli_missing_or_unpaired(tmp_path):
    (tmp_path / "x_positive.txt").write_text("a\nb\n")
    with pytest.raises(FileNotFoundError, match="x_negative.txt"):
        load_stimuli([str(tmp_path / "x_positive.txt")], ["x"])
    (tmp_path / "x_negative.txt").write_text("c\n")
    with pytest.raises(ValueError, match="2 positive but 1 negative"):
        load_stimuli([str(tmp_path / "x_positive.txt"), str(tmp_path / "x_negative.txt")], ["x"])


def test_no_scored_feature_gives_the_intercept_only_probe():
    """Every feature fires on one sentence only: RSA refuses all of them (k = 0) and the
    probe is the intercept-only one, at chance on the balanced splits; max activation still
    picks top_k features."""
    import torch

    from stages_of_inference.concepts.compute import majority_accuracy, probe_concept, window_means
    from stages_of_inference.concepts.settings import ConceptSettings

    n_per, window, n_features = 12, 6, 10
    labels = np.r_[np.ones(n_per), np.zeros(n_per)].astype(int)
    pair_ids = np.r_[np.arange(n_per), np.arange(n_per)]
    patterns = torch.zeros(2 * n_per, window, n_features)
    for f in range(n_features):
        patterns[f, f % window, f] = 1.0 + f
    means = window_means(patterns, np.full(2 * n_per, window))
    spec = ConceptSettings.from_config({"n_splits": 3, "top_k": 4})
    df = probe_concept("m", "c", {"sae": (patterns, means)}, labels, pair_ids, spec)
    rsa_rows = df[df.method != "maxact"]
    assert (rsa_rows["k"] == 0).all() and (rsa_rows["refused"] == n_features).all()
    assert (rsa_rows["test_accuracy"] == 0.5).all() and (rsa_rows["train_accuracy"] == 0.5).all()
    assert (df.loc[df.method == "maxact", "k"] == 4).all() and (df.loc[df.method == "maxact", "refused"] == 0).all()
    assert majority_accuracy(np.array([1, 1, 0]), np.array([1, 0, 0, 0])) == (pytest.approx(2 / 3), 0.25)
