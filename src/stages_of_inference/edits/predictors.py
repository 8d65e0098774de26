"""Cheap predictors of which blocks can be dropped, from the baseline's residual stream,
set against the measured effect of dropping them.

``x_l`` is the residual entering block ``l`` (``x_N``: the last block's output, the final
residual *before* the final norm; not Hugging Face's last hidden state, which is after it).

* Block Influence (ShortGPT, Men et al. 2024): ``BI_l = 1 - mean_tokens cos(x_l, x_{l+1})``;
  a window of ``n`` blocks gets the sum of its blocks' BI (ShortGPT removes the n blocks of
  lowest BI);
* angular distance (Gromov et al. 2024): ``d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi`` at
  the *last* token of each sequence, averaged over sequences (``angular_last``); the same
  averaged over every scored token (``angular_tokens``, a less noisy variant). Gromov et al.
  drop the window ``l*(n) = argmin_l d(l, l+n)``.

A predictor predicts *harm*: the larger, the more the drop should change the output
(Spearman rho with KL > 0, with accuracy retained < 0).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

PREDICTORS = ("block_influence", "angular_last", "angular_tokens")
MEASURES = ("kl", "accuracy_retained")


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension, in float64."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-300)


def angular(cos: torch.Tensor) -> torch.Tensor:
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


class ResidualStats:
    """Sums over batches of what the predictors need. ``add(xs)``: ``xs [N+1, B, T, d]``,
    the residual entering every block and the final one, at the scored positions."""

    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.cos_next = torch.zeros(n_layers, dtype=torch.float64)  # sum over tokens of cos(x_l, x_{l+1})
        self.tokens = 0
        self.ang_last = torch.zeros(n_layers + 1, n_layers + 1, dtype=torch.float64)  # sum over sequences
        self.ang_tokens = torch.zeros(n_layers + 1, n_layers + 1, dtype=torch.float64)  # sum over tokens
        self.sequences = 0

    def add(self, xs: torch.Tensor) -> None:
        xs = xs.double()
        unit = xs / xs.norm(dim=-1, keepdim=True).clamp(min=1e-300)  # [N+1, B, T, d]
        self.cos_next += (unit[:-1] * unit[1:]).sum(-1).sum((1, 2)).cpu()
        self.tokens += xs.shape[1] * xs.shape[2]
        last = unit[:, :, -1]  # [N+1, B, d]
        self.ang_last += angular(torch.einsum("ibd,jbd->bij", last, last)).sum(0).cpu()
        self.ang_tokens += angular(torch.einsum("ibtd,jbtd->btij", unit, unit)).sum((0, 1)).cpu()
        self.sequences += xs.shape[1]

    def block_influence(self) -> np.ndarray:
        """``BI_l`` for l = 0..N-1."""
        return (1.0 - self.cos_next / self.tokens).numpy()

    def table(self, widths) -> pd.DataFrame:
        """One row per window (``width``, ``first``): the predictors of dropping blocks
        ``first..first+width-1``."""
        bi = self.block_influence()
        last = (self.ang_last / self.sequences).numpy()
        tokens = (self.ang_tokens / self.tokens).numpy()
        rows = []
        for n in widths:
            for first in range(self.n_layers - n + 1):
                rows.append({"width": n, "first": first, "block_influence": float(bi[first:first + n].sum()),
                             "angular_last": float(last[first, first + n]),
                             "angular_tokens": float(tokens[first, first + n])})
        return pd.DataFrame(rows)


def predictors_table(predicted: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """Predictors against the measured drop of the same window, long format: one row per
    (model, width, first, predictor). ``windows``: the ``window`` rows of the layer-edit
    summary. ``pick`` marks the window each predictor would drop (its minimum per width);
    ``measured_rank`` is the window's rank by measured KL among its width (1 = least)."""
    keep = ["model", "width", "first", "last", "rel_depth", "n_layers", "kl_mean", "kl_se", "top1_agree_mean",
            "correct_mean", "correct_base_mean", "accuracy_retained", "n_tokens"]
    measured = windows[keep].copy()
    measured["measured_rank"] = measured.groupby("width")["kl_mean"].rank(method="min").astype(int)
    long = predicted.melt(id_vars=["width", "first"], value_vars=list(PREDICTORS), var_name="predictor",
                          value_name="value")
    df = measured.merge(long, on=["width", "first"], how="inner", validate="one_to_many")
    df["pick"] = df["value"] == df.groupby(["width", "predictor"])["value"].transform("min")
    return df.sort_values(["predictor", "width", "first"]).reset_index(drop=True)


def spearman_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, width, predictor, measure): Spearman's rho (``scipy.stats.spearmanr``)
    over the windows, its p value, and how well the predictor's pick (its minimum) does:
    the measured KL rank of the picked window (1 = the least harmful drop)."""
    from scipy.stats import spearmanr

    rows = []
    for (model, width, predictor), g in df.groupby(["model", "width", "predictor"], sort=True):
        picked = g[g["pick"]].sort_values("first").iloc[0]
        best = g.sort_values(["kl_mean", "first"]).iloc[0]
        for measure in MEASURES:
            y = g[f"{measure}_mean" if measure == "kl" else measure]
            ok = g["value"].notna() & y.notna()
            if ok.sum() >= 3 and g.loc[ok, "value"].nunique() > 1 and y[ok].nunique() > 1:
                res = spearmanr(g.loc[ok, "value"], y[ok])
                rho, p = float(res.statistic), float(res.pvalue)
            else:
                rho = p = float("nan")
            rows.append({"model": model, "width": int(width), "predictor": predictor, "measure": measure,
                         "rho": rho, "p_value": p, "n_windows": int(ok.sum()),
                         "picked_first": int(picked["first"]), "picked_kl": float(picked["kl_mean"]),
                         "picked_rank": int(picked["measured_rank"]), "best_first": int(best["first"]),
                         "best_kl": float(best["kl_mean"])})
    return pd.DataFrame(rows)
