"""Linear CKA between the residual streams after every pair of blocks.

As in the co-author fork (jinhl9/Remarkable-Robustness-of-LLMs,
``representation_similarity.py``): for each document (sequence) its tokens are the
samples; the linear kernel ``K = X X^T`` of a layer's residuals has its diagonal set to
zero; HSIC is the unbiased estimator of Nguyen, Raghu & Kornblith 2021 (eq. 3, after Song
et al. 2012)::

    HSIC_1(K, L) = [tr(K L) + (1^T K 1)(1^T L 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K L 1] / (n (n-3))

summed over documents; ``CKA(a, b) = HSIC(K_a, K_b) / sqrt(HSIC(K_a, K_a) HSIC(K_b, K_b))``
of the document averages. Float64 throughout (residual norms reach 10^3 on some tokens:
kernel sums overflow float32's precision).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def zero_diag_gram(x: torch.Tensor) -> torch.Tensor:
    """``K = X X^T`` with a zero diagonal, per layer: x ``[L, n, d]`` -> ``[L, n, n]`` float64."""
    x = x.double()
    k = x @ x.transpose(-1, -2)
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def hsic_matrix(x: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC between every pair of layers of one document: ``x [L, n, d]`` (layer,
    token, feature) -> ``[L, L]`` float64. Needs ``n >= 4`` tokens."""
    n = x.shape[1]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples (tokens); got {n}.")
    k = zero_diag_gram(x)
    flat = k.reshape(k.shape[0], -1)
    trace = flat @ flat.T  # tr(K_a K_b) = sum(K_a * K_b): the kernels are symmetric
    total = k.sum((1, 2))  # 1^T K 1
    rows = k.sum(2)  # K 1
    cross = rows @ rows.T  # 1^T K_a K_b 1
    out = trace + torch.outer(total, total) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross
    return out / (n * (n - 3))


class CKAAccumulator:
    """Sums per-document HSIC matrices over batches; ``cka()`` is the layer x layer CKA."""

    def __init__(self):
        self.total = None
        self.documents = 0

    def add(self, residuals: torch.Tensor) -> None:
        """``residuals [L, B, n, d]``: L layers of B documents of n tokens."""
        for b in range(residuals.shape[1]):
            h = hsic_matrix(residuals[:, b])
            self.total = h if self.total is None else self.total + h
            self.documents += 1

    def cka(self) -> torch.Tensor:
        if self.total is None:
            raise ValueError("CKA of no document.")
        h = self.total / self.documents
        d = h.diagonal().clamp(min=0).sqrt()
        return h / torch.outer(d, d)


def cka_table(cka: torch.Tensor, n_layers: int, documents: int, tokens: int) -> pd.DataFrame:
    """Tidy CKA: one row per (layer_a, layer_b), the residual after each block."""
    from ..core.metrics import rel_depth

    layers = np.arange(cka.shape[0])
    a, b = np.meshgrid(layers, layers, indexing="ij")
    df = pd.DataFrame({"layer_a": a.ravel().astype(np.int32), "layer_b": b.ravel().astype(np.int32),
                       "cka": cka.cpu().numpy().ravel()})
    df["rel_depth_a"] = rel_depth(df["layer_a"], n_layers)
    df["rel_depth_b"] = rel_depth(df["layer_b"], n_layers)
    df["n_layers"] = n_layers
    df["documents"] = documents
    df["tokens_per_document"] = tokens
    return df
