"""Per-feature representational similarity analysis (RSA) scores, as in the seed project.

For one feature (a residual-stream dimension or an SAE feature), each sentence is
represented by its *token pattern*: the feature's activations over the first ``window``
tokens after BOS (zero-padded, as the seed does). The feature's representational
dissimilarity matrix (RDM) over sentences is the correlation distance ``1 - r_ij`` of
those patterns (``scipy.spatial.distance.pdist(..., "correlation")``). Pairs are compared
as Fisher-z similarities ``z_ij = artanh(r_ij)`` (r clipped to ±0.999); a sentence whose
pattern is constant (e.g. a silent SAE feature) has no correlation, so its pairs are left
out for that feature.

Two scores per feature, each a pooled two-sample t statistic over sentence pairs of the
training split (``scipy.stats.ttest_ind``):

* ``rsa_discriminative``: within-concept pairs (positive-positive) against across pairs
  (positive-negative): high when the concept's sentences resemble each other more than
  they resemble the contrast sentences;
* ``rsa_categorical``: within-concept pairs against within-contrast pairs
  (negative-negative): high when the concept's sentences form a tighter category than
  the contrast sentences do.

These are the seed's two contrasts (part3e_combinatorial_RSA_GLM_analysis.py) with two
fixes: the seed z-transformed ``1 - r`` (``arctanh(1 - r)``, NaN for every r < 0, which it
then dropped) and ranked features by the t statistic of *dissimilarities* within minus
across, i.e. it picked features whose concept sentences were *less* alike; here the
similarity is ``artanh(r)`` and high scores mean the concept's sentences are more alike.
The seed also z-scored t over features, which does not change the ranking (left out).

Every split's scores come from one pass over the features: the pair sums and counts for
all splits are matrix products of the features' z matrices with the splits' pair masks.
"""
from __future__ import annotations

import numpy as np
import torch

RSA_METHODS = ("rsa_categorical", "rsa_discriminative")
CLIP = 0.999


def pattern_correlations(patterns: torch.Tensor, eps: float = 1e-8):
    """Per-feature Pearson correlations between sentences' token patterns.

    ``patterns`` [n, W, F] -> (r [F, n, n], valid [F, n]); ``valid`` is False where a
    sentence's pattern is constant (its correlations are undefined; r is 0 there).
    """
    x = patterns.permute(2, 0, 1).double()  # [F, n, W]
    x = x - x.mean(dim=2, keepdim=True)
    norm = x.norm(dim=2, keepdim=True)
    valid = norm.squeeze(2) > eps * (1 + x.abs().amax(dim=2))
    x = torch.where(valid.unsqueeze(2), x / norm.clamp(min=1e-300), torch.zeros_like(x))
    return (x @ x.transpose(1, 2)).float(), valid


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
    return np.stack([c.ravel() for c in cols], axis=1).astype(np.float32)


def _pooled_t(s_a, q_a, n_a, s_b, q_b, n_b):
    """Pooled-variance two-sample t from sums, sums of squares and counts (0 if undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m_a, m_b = s_a / n_a, s_b / n_b
        ss = (q_a - n_a * m_a**2) + (q_b - n_b * m_b**2)
        sp2 = ss / (n_a + n_b - 2)
        t = (m_a - m_b) / np.sqrt(sp2 * (1 / n_a + 1 / n_b))
    ok = (n_a >= 2) & (n_b >= 2) & (sp2 > 1e-12) & np.isfinite(t)
    return np.where(ok, t, 0.0)


def rsa_scores(patterns: torch.Tensor, labels: np.ndarray, train: np.ndarray,
               chunk: int = 128) -> dict[str, np.ndarray]:
    """Both RSA scores of every feature for every split: ``{method: [S, F]}``.

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
        pair_ok = (valid.unsqueeze(2) & valid.unsqueeze(1)).float()
        z = torch.atanh(r.clamp(-CLIP, CLIP)) * pair_ok
        fc = len(r)
        sl = slice(start, start + fc)
        sums[sl] = (z.reshape(fc, n * n).double() @ masks.double()).numpy()
        squares[sl] = ((z * z).reshape(fc, n * n).double() @ masks.double()).numpy()
        counts[sl] = (pair_ok.reshape(fc, n * n) @ masks).numpy()
    out = {}
    wp, wn, ac = (slice(i, None, 3) for i in range(3))
    s, q, c = sums.T, squares.T, counts.T  # [3S, F]
    out["rsa_discriminative"] = _pooled_t(s[wp], q[wp], c[wp], s[ac], q[ac], c[ac])
    out["rsa_categorical"] = _pooled_t(s[wp], q[wp], c[wp], s[wn], q[wn], c[wn])
    return out
