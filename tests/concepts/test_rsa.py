from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ttest_ind

from stages_of_inference.concepts import rsa
from stages_of_inference.concepts.compute import maxact_scores, probe_concept, top_k, window_means
from stages_of_inference.concepts.rsa import pattern_correlations, pooled_t, rsa_scores
from stages_of_inference.concepts.settings import ConceptSettings

DEFAULTS = ConceptSettings.from_config({})
RULE = {"min_pairs": DEFAULTS.rsa_min_pairs, "min_se": DEFAULTS.rsa_min_se}  # the schema's defaults
NO_RULE = {"min_pairs": 2, "min_se": 0.0}
REPO = Path(__file__).resolve().parents[2]


def planted(n_per=20, window=8, n_features=50, seed=0):
    """Token patterns where feature 7 carries the concept and feature 3 is a loud,
    high-variance distractor unrelated to the labels."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_per), np.zeros(n_per)].astype(int)
    x = rng.normal(size=(2 * n_per, window, n_features))
    template = rng.normal(size=window)
    x[labels == 1, :, 7] = template + 0.3 * rng.normal(size=(n_per, window))
    x[:, :, 3] = 40 + 20 * rng.normal(size=(2 * n_per, window))
    return torch.tensor(x, dtype=torch.float32), labels


def test_rsa_finds_planted_feature_maxact_is_fooled():
    patterns, labels = planted()
    train = np.ones((1, len(labels)), dtype=bool)
    scores = rsa_scores(patterns, labels, train, chunk=16, **RULE)
    assert top_k(scores["rsa_discriminative"][0], 8)[0] == 7
    assert top_k(scores["rsa_categorical"][0], 8)[0] == 7
    means = window_means(patterns, np.full(len(labels), patterns.shape[1]))
    maxact = maxact_scores(means, train)[0]
    assert top_k(maxact, 8)[0] == 3          # the loud distractor wins max activation
    assert 7 not in top_k(maxact, 8)         # and the concept feature is not even in its top 8


def test_rsa_uses_training_sentences_only():
    patterns, labels = planted()
    train = np.ones((2, len(labels)), dtype=bool)
    train[1, :10] = False                    # drop 10 positives from split 1
    full = rsa_scores(patterns, labels, train[:1], **RULE)
    both = rsa_scores(patterns, labels, train, **RULE)
    sub = rsa_scores(patterns[10:], labels[10:], np.ones((1, len(labels) - 10), dtype=bool), **RULE)
    for m in full:
        np.testing.assert_allclose(both[m][0], full[m][0], rtol=1e-5)
        np.testing.assert_allclose(both[m][1], sub[m][0], rtol=1e-4, atol=1e-5)


def test_matches_scipy_rdm_and_ttest():
    """Features with enough pairs (the schema's default rule) score exactly scipy's t."""
    patterns, labels = planted(n_per=12, window=6, n_features=9, seed=1)
    patterns[4, :, 2] = 0.0                  # a silent sentence for feature 2: its pairs drop out
    r, valid = pattern_correlations(patterns)
    assert not valid[2, 4] and valid[2].sum() == len(labels) - 1
    scores = rsa_scores(patterns, labels, np.ones((1, len(labels)), dtype=bool), chunk=2, **RULE)
    for f in range(9):
        keep = np.flatnonzero(valid[f].numpy())
        x = patterns[keep, :, f].double().numpy()
        rdm = squareform(pdist(x, "correlation"))
        np.testing.assert_allclose(1 - r[f][np.ix_(keep, keep)].numpy(), rdm, atol=1e-10)
        z = np.arctanh(np.clip(1 - rdm, -0.999, 0.999))
        lab = labels[keep]
        iu = np.triu_indices(len(keep), 1)
        zz, a, b = z[iu], lab[iu[0]], lab[iu[1]]
        within_pos, within_neg, across = zz[(a == 1) & (b == 1)], zz[(a == 0) & (b == 0)], zz[a != b]
        assert min(len(within_pos), len(within_neg), len(across)) >= RULE["min_pairs"]  # not refused
        np.testing.assert_allclose(scores["rsa_discriminative"][0, f], ttest_ind(within_pos, across).statistic,
                                   rtol=1e-9)
        np.testing.assert_allclose(scores["rsa_categorical"][0, f], ttest_ind(within_pos, within_neg).statistic,
                                   rtol=1e-9)


def with_sparse_feature(n_per=20, window=8, seed=0):
    """planted() plus feature 11, which fires on 3 positives (nearly the same two-token
    pattern) and 1 negative (another pattern): 3 + 3 defined pairs, a huge honest t."""
    patterns, labels = planted(n_per=n_per, window=window, seed=seed)
    rng = np.random.default_rng(seed + 1)
    patterns[:, :, 11] = 0.0
    shape = torch.zeros(window)
    shape[:2] = torch.tensor([3.0, 1.0])
    for i in (0, 1, 2):  # within r 0.995-0.997 (below the clip), across r about -0.27
        patterns[i, :, 11] = shape + 0.1 * torch.tensor(rng.normal(size=window), dtype=torch.float32)
    patterns[n_per, 4:6, 11] = torch.tensor([1.0, 3.0])
    return patterns, labels


def test_sparse_feature_is_refused_and_would_have_won():
    patterns, labels = with_sparse_feature()
    train = np.ones((1, len(labels)), dtype=bool)
    before = rsa_scores(patterns, labels, train, **NO_RULE)["rsa_discriminative"][0]
    after = rsa_scores(patterns, labels, train, **RULE)["rsa_discriminative"][0]
    assert top_k(before, 8)[0] == 11        # without the rule the 4-sentence feature is the top pick
    assert np.isnan(after[11])              # with it: refused (3 < 45 pairs a side) ...
    assert 11 not in top_k(after, 8) and top_k(after, 8)[0] == 7  # ... and the concept feature wins
    np.testing.assert_allclose(np.delete(after, [3, 11]), np.delete(before, [3, 11]), rtol=1e-12)
    # the rule is about the count: with min_pairs 3 the feature is back
    assert top_k(rsa_scores(patterns, labels, train, min_pairs=3, min_se=RULE["min_se"])["rsa_discriminative"][0],
                 8)[0] == 11


def test_sparse_feature_never_selected_by_the_probes():
    patterns, labels = with_sparse_feature()
    n_per = len(labels) // 2
    pair_ids = np.r_[np.arange(n_per), np.arange(n_per)]
    means = window_means(patterns, np.full(len(labels), patterns.shape[1]))
    spaces = {"sae": (patterns, means)}
    rows = {}
    for name, rule in (("rule", RULE), ("no_rule", NO_RULE)):
        spec = ConceptSettings.from_config({"n_splits": 8, "top_k": 4, "rsa_min_pairs": rule["min_pairs"],
                                            "rsa_min_se": rule["min_se"]})
        df = probe_concept("m", "c", spaces, labels, pair_ids, spec)
        rows[name] = df[df.method != "maxact"]
    picked = lambda df: df["features"].map(lambda f: 11 in f)  # noqa: E731
    assert picked(rows["no_rule"]).any()        # it was selected in some splits without the rule
    assert not picked(rows["rule"]).any()       # never with it
    assert (rows["rule"]["k"] == 4).all() and (rows["rule"]["refused"] >= 1).all()


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_identical_z_values_are_refused():
    """Positives: one spike each, negatives: two equal spikes, on disjoint tokens. Every
    within-positive z is artanh(-1/(W-1)) and every across z one other constant: the
    standard error is 0 (up to rounding), so scipy's t is rounding noise (huge, the top
    pick); the rule refuses the feature."""
    n_per, window = 20, 24
    patterns, labels = planted(n_per=n_per, window=window)
    patterns[:, :, 5] = 0.0
    rng = np.random.default_rng(3)
    for i in range(n_per):
        patterns[i, i, 5] = float(rng.uniform(0.5, 3.0))  # tokens 0..19, one each
        j = 20 + i % 3                                      # tokens 20..23
        patterns[n_per + i, [j, j + 1], 5] = 2.0
    train = np.ones((1, len(labels)), dtype=bool)
    r, valid = pattern_correlations(patterns[:, :, 5:6])
    z = np.arctanh(np.clip(r[0].numpy(), -0.999, 0.999))
    iu = np.triu_indices(len(labels), 1)
    a, b = labels[iu[0]], labels[iu[1]]
    within, across = z[iu][(a == 1) & (b == 1)], z[iu][a != b]
    np.testing.assert_allclose(within, np.arctanh(-1 / (window - 1)), rtol=1e-12)  # all equal
    assert np.ptp(across) < 1e-12
    t_scipy = ttest_ind(within, across).statistic
    others = rsa_scores(patterns, labels, train, **RULE)["rsa_discriminative"][0]
    assert not np.isfinite(t_scipy) or abs(t_scipy) > 100 * np.nanmax(np.abs(np.delete(others, 5)))
    assert np.isnan(others[5])
    assert 5 not in top_k(others, 8)
    # refused for its standard error, not for its pair counts
    sums = [within.sum(), (within ** 2).sum(), len(within), across.sum(), (across ** 2).sum(), len(across)]
    t, se = pooled_t(*sums, **RULE)
    assert np.isnan(t) and se < RULE["min_se"] and min(len(within), len(across)) >= RULE["min_pairs"]


def test_pooled_t_rule_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.5, 50), rng.normal(0.0, 0.5, 60)
    sums = lambda x: (x.sum(), (x * x).sum(), len(x))  # noqa: E731
    t, se = pooled_t(*sums(a), *sums(b), min_pairs=50, min_se=1e-3)
    assert t == pytest.approx(ttest_ind(a, b).statistic, rel=1e-10)
    sp2 = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    assert se == pytest.approx(np.sqrt(sp2 * (1 / 50 + 1 / 60)))
    assert np.isnan(pooled_t(*sums(a), *sums(b), min_pairs=51, min_se=1e-3)[0])   # a side has 50 < 51
    assert np.isnan(pooled_t(*sums(a), *sums(b), min_pairs=2, min_se=se * 1.01)[0])  # below the floor
    assert np.isfinite(pooled_t(*sums(a), *sums(b), min_pairs=2, min_se=se * 0.99)[0])


def test_rule_defaults_are_stated():
    """The schema's defaults are the ones the module docstring and the figure caption state."""
    caption = (REPO / "workflow/report/concept_methods.rst").read_text()
    for text in (rsa.__doc__, caption):
        assert f"default {DEFAULTS.rsa_min_pairs}" in text and f"default {DEFAULTS.rsa_min_se:g}" in text


def test_top_k_orders_best_first():
    assert top_k(np.array([0.1, 3.0, 2.0, 3.0, -1.0]), 3).tolist() == [1, 3, 2]


def test_top_k_never_selects_refused():
    assert top_k(np.array([np.nan, 1.0, 2.0, np.nan, -5.0]), 3).tolist() == [2, 1, 4]
    assert top_k(np.array([np.nan, np.nan]), 3).tolist() == []
