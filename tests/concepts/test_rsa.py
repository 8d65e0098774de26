import numpy as np
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ttest_ind

from stages_of_inference.concepts.compute import maxact_scores, top_k, window_means
from stages_of_inference.concepts.rsa import pattern_correlations, rsa_scores


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
    scores = rsa_scores(patterns, labels, train, chunk=16)
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
    full = rsa_scores(patterns, labels, train[:1])
    both = rsa_scores(patterns, labels, train)
    sub = rsa_scores(patterns[10:], labels[10:], np.ones((1, len(labels) - 10), dtype=bool))
    for m in full:
        np.testing.assert_allclose(both[m][0], full[m][0], rtol=1e-5)
        np.testing.assert_allclose(both[m][1], sub[m][0], rtol=1e-4, atol=1e-5)


def test_matches_scipy_rdm_and_ttest():
    patterns, labels = planted(n_per=9, window=6, n_features=9, seed=1)
    patterns[4, :, 2] = 0.0                  # a silent sentence for feature 2: its pairs drop out
    r, valid = pattern_correlations(patterns)
    assert not valid[2, 4] and valid[2].sum() == len(labels) - 1
    scores = rsa_scores(patterns, labels, np.ones((1, len(labels)), dtype=bool), chunk=2)
    for f in range(9):
        keep = np.flatnonzero(valid[f].numpy())
        x = patterns[keep, :, f].double().numpy()
        rdm = squareform(pdist(x, "correlation"))
        np.testing.assert_allclose(1 - r[f][np.ix_(keep, keep)].numpy(), rdm, atol=1e-5)
        z = np.arctanh(np.clip(1 - rdm, -0.999, 0.999))
        lab = labels[keep]
        iu = np.triu_indices(len(keep), 1)
        zz, a, b = z[iu], lab[iu[0]], lab[iu[1]]
        within_pos, within_neg, across = zz[(a == 1) & (b == 1)], zz[(a == 0) & (b == 0)], zz[a != b]
        np.testing.assert_allclose(scores["rsa_discriminative"][0, f], ttest_ind(within_pos, across).statistic, rtol=1e-4)
        np.testing.assert_allclose(scores["rsa_categorical"][0, f], ttest_ind(within_pos, within_neg).statistic, rtol=1e-4)


def test_top_k_orders_best_first():
    assert top_k(np.array([0.1, 3.0, 2.0, 3.0, -1.0]), 3).tolist() == [1, 3, 2]
