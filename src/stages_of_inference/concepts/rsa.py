"""Per-feature representational similarity analysis (RSA) scores.

For one feature (a residual-stream dimension or an SAE feature), each sentence is
represented by its *token pattern*: the feature's activations over the first ``window``
tokens after BOS (zero-padded). The feature's representational dissimilarity matrix (RDM)
over sentences is the correlation distance ``1 - r_ij`` of those patterns
(``scipy.spatial.distance.pdist(..., "correlation")``). Pairs are compared as Fisher-z
similarities ``z_ij = artanh(r_ij)`` (r clipped to ±0.999); a sentence whose pattern is
constant (e.g. a silent SAE feature) has no correlation, so its pairs are left out for that
feature (they are not *defined*).

Two scores per feature, each a pooled two-sample t statistic over the defined sentence
pairs of the training split (``scipy.stats.ttest_ind``):

* ``rsa_discriminative``: within-concept pairs (positive-positive) against across pairs
  (positive-negative): high when the concept's sentences resemble each other more than
  they resemble the contrast sentences;
* ``rsa_categorical``: within-concept pairs against within-contrast pairs
  (negative-negative): high when the concept's sentences form a tighter category than
  the contrast sentences do.

The seed README names the two RSA variants, discriminative and categorical, and used RSA
only to select features (not in the classifier), as here; it does not define them, so the
definitions above are this project's. Similarity is
``artanh(r)`` and high scores mean the concept's sentences are more alike.

*Refused features.* A feature gets no score (NaN;
:func:`stages_of_inference.concepts.compute.top_k` never selects it) in a split where

* either side has fewer than ``concepts.rsa_min_pairs`` defined pairs (default 45, all
  pairs of 10 sentences): an SAE feature that fires on 4 of 120 training sentences leaves
  3 + 3 pairs, all from the same 4 sentences, and its t, however large, says nothing about
  the concept; or
* the standard error of the difference of means, ``sqrt(s_p^2 (1/n_a + 1/n_b))`` (the t
  statistic's denominator, in Fisher-z units), is below ``concepts.rsa_min_se``
  (default 0.001): where every z value of a side is the same, the standard error is 0 up to rounding
  and t is rounding noise over rounding noise. Sparse SAE features do this: two patterns
  that are each one spike at different tokens correlate at exactly ``-1/(window - 1)``,
  whichever the tokens. SmolLM2's SAE feature 355 fires on 3 positive training sentences
  of one split (one token each) and 1 negative (two tokens): 3 + 3 pairs, every within z
  -0.0667657, every across z -0.0976548; its t was 12,549 here before the rule and is
  1e15 in scipy.

With the default settings, every SAE feature of SmolLM2 and of Gemma 3 270M with at least
45 pairs a side has a standard error either below 5e-8 (equal z values) or above 7e-3, so
the floor sits in an empty gap; no raw residual dimension of either model is refused.

Every split's scores come from one pass over the features: the pair sums and counts for
all splits are matrix products of the features' z matrices with the splits' pair masks
(in float64, so that the sums of squares minus the squared sums are exact enough for the
standard error floor to see a standard error of 0).
"""
from __future__ import annotations

import numpy as np
import torch

RSA_METHODS = ("rsa_categorical", "rsa_discriminative")
CLIP = 0.999


def pattern_correlations(patterns: torch.Tensor, eps: float = 1e-8):
    """Per-feature Pearson correlations between sentences' token patterns.

    ``patterns`` [n, W, F] -> (r [F, n, n] float64, valid [F, n]); ``valid`` is False where a
    sentence's pattern is constant (its correlations are undefined; r is 0 there).
    """
    x = patterns.permute(2, 0, 1).double()  # [F, n, W]
    x = x - x.mean(dim=2, keepdim=True)
    norm = x.norm(dim=2, keepdim=True)
    valid = norm.squeeze(2) > eps * (1 + x.abs().amax(dim=2))
    x = torch.where(valid.unsqueeze(2), x / norm.clamp(min=1e-300), torch.zeros_like(x))
    return x @ x.transpose(1, 2), valid


def pair_masks(labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """[n*n, 3*S] pair masks (float) of the splits' training sentences, per split in
    the column order (within-positive, within-negative, across); unordered pairs once."""
    labels = np.asarray(labels).astype(bool)
    train = np.atleast_2d(np.asarray(train, dtype=bool))
    n = len(labels)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    cols = []
    for row in train:
        pos, neg = row & labels, row & ~labels
        cols += [np.outer(pos, pos) & upper, np.outer(neg, neg) & upper, np.outer(pos, neg)]
    return np.stack([c.ravel() for c in cols], axis=1).astype(np.float64)


def pooled_t(s_a, q_a, n_a, s_b, q_b, n_b, *, min_pairs: int, min_se: float):
    """Pooled-variance two-sample t from sums, sums of squares and counts, and its standard
    error; t is NaN (refused) where a side has fewer than ``min_pairs`` values (at least 2)
    or the standard error is below ``min_se``."""
    s_a, q_a, n_a, s_b, q_b, n_b = (np.asarray(v, dtype=np.float64) for v in (s_a, q_a, n_a, s_b, q_b, n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        m_a, m_b = s_a / n_a, s_b / n_b
        ss = np.maximum(q_a - n_a * m_a**2, 0) + np.maximum(q_b - n_b * m_b**2, 0)
        se = np.sqrt(ss / (n_a + n_b - 2) * (1 / n_a + 1 / n_b))
        t = (m_a - m_b) / se
    ok = (np.minimum(n_a, n_b) >= max(min_pairs, 2)) & (se >= min_se) & np.isfinite(t)
    return np.where(ok, t, np.nan), se


def rsa_scores(patterns: torch.Tensor, labels: np.ndarray, train: np.ndarray, *, min_pairs: int, min_se: float,
               chunk: int = 128) -> dict[str, np.ndarray]:
    """Both RSA scores of every feature for every split: ``{method: [S, F]}``, NaN where
    the feature is refused (:func:`pooled_t`; ``min_pairs``, ``min_se`` are
    ``concepts.rsa_min_pairs``, ``concepts.rsa_min_se``).

    ``patterns`` [n, W, F] token patterns of all sentences, ``labels`` [n] (1 = concept),
    ``train`` [S, n] boolean training masks (only training sentences are used).
    """
    train = np.atleast_2d(np.asarray(train, dtype=bool))
    n_splits = len(train)
    n, _, n_features = patterns.shape
    masks = torch.from_numpy(pair_masks(labels, train))  # [n*n, 3S]
    sums = np.zeros((n_features, 3 * n_splits))
    squares = np.zeros_like(sums)
    counts = np.zeros_like(sums)
    for start in range(0, n_features, chunk):
        r, valid = pattern_correlations(patterns[:, :, start : start + chunk])
        pair_ok = (valid.unsqueeze(2) & valid.unsqueeze(1)).double()
        z = torch.atanh(r.clamp(-CLIP, CLIP)) * pair_ok
        fc = len(r)
        sl = slice(start, start + fc)
        sums[sl] = (z.reshape(fc, n * n) @ masks).numpy()
        squares[sl] = ((z * z).reshape(fc, n * n) @ masks).numpy()
        counts[sl] = (pair_ok.reshape(fc, n * n) @ masks).numpy()
    out = {}
    wp, wn, ac = (slice(i, None, 3) for i in range(3))
    s, q, c = sums.T, squares.T, counts.T  # [3S, F]
    rule = {"min_pairs": min_pairs, "min_se": min_se}
    out["rsa_discriminative"] = pooled_t(s[wp], q[wp], c[wp], s[ac], q[ac], c[ac], **rule)[0]
    out["rsa_categorical"] = pooled_t(s[wp], q[wp], c[wp], s[wn], q[wn], c[wn], **rule)[0]
    return out
