"""Figures of the concept-features study: read tidy tables, draw. No model is run here."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..core.plotting import model_palette, save

METHOD_LABELS = {"maxact": "max activation", "rsa_categorical": "RSA categorical",
                 "rsa_discriminative": "RSA discriminative"}
SPACE_COLORS = {"raw": "#7f7f7f", "sae": "#1f77b4"}
SPACE_LABELS = {"raw": "raw residual", "sae": "SAE features"}


def plot_sae_training(models: Sequence[str], training: pd.DataFrame, quality: pd.DataFrame,
                      features: pd.DataFrame, out_pdf, styles=None) -> None:
    """Per model: training curve (explained variance, L0, dead features) and the
    distribution of feature firing rates, with the held-out quality in the title."""
    palette = model_palette(models)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for model in models:
        t = training[training["model"] == model].sort_values("step")
        q = quality[quality["model"] == model].iloc[0]
        color = palette[model]
        label = (f"{model}: held-out EV {q['val_explained_variance']:.3f}, L0 {q['val_l0']:.1f}, "
                 f"dead {int(q['dead_features'])}/{int(q['d_sae'])}")
        axes[0].plot(t["tokens_seen"], t["explained_variance"], color=color, lw=1.2, label=label)
        axes[0].scatter([t["tokens_seen"].max()], [q["val_explained_variance"]], color=color, marker="*", s=80,
                        zorder=3, edgecolor="k", linewidth=0.5)
        axes[1].plot(t["tokens_seen"], t["l0"], color=color, lw=1.2)
        axes[2].plot(t["tokens_seen"], t["dead"] / q["d_sae"], color=color, lw=1.2)
        rates = features.loc[features["model"] == model, "firing_rate"].to_numpy()
        floor = 1.0 / max(q["n_train_tokens"] + q.get("n_val_tokens", 0), 1)
        axes[3].hist(np.log10(np.clip(rates, floor / 10, None)), bins=40, color=color, alpha=0.55,
                     label=f"{model} (never fired: {int((rates == 0).sum())})")
    axes[0].set(xlabel="training tokens", ylabel="explained variance (batch)", ylim=(min(0, axes[0].get_ylim()[0]), 1),
                title="Reconstruction (★ = held-out)")
    axes[1].set(xlabel="training tokens", ylabel="L0 (active features / token)", title="Sparsity")
    axes[2].set(xlabel="training tokens", ylabel="fraction dead (not fired recently)", title="Dead features",
                ylim=(-0.02, 1.02))
    axes[3].set(xlabel="log10 firing rate (train + held-out tokens)", ylabel="features",
                title="Feature firing rates")
    axes[3].legend(fontsize=7, loc="upper left")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=max(1, len(models)), fontsize=8,
               bbox_to_anchor=(0.5, -0.08), frameon=False)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("SAE on the residual stream (middle layer by default): training and quality", y=1.03)
    fig.tight_layout()
    save(fig, out_pdf)


def plot_concept_methods(models: Sequence[str], summary: pd.DataFrame, found: pd.DataFrame, out_pdf, styles=None) -> None:
    """Held-out accuracy of every (space, method) with 95% intervals: one panel per model and
    concept; the last column gives the seed's three findings as paired differences."""
    concepts = list(dict.fromkeys(summary["concept"]))
    methods = [m for m in METHOD_LABELS if m in set(summary["method"])]
    spaces = [s for s in SPACE_LABELS if s in set(summary["space"])]
    n_rows, n_cols = len(models), len(concepts) + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.6 * n_rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(concepts) + [1.3]})
    width = 0.8 / max(len(spaces), 1)
    for r, model in enumerate(models):
        for c, concept in enumerate(concepts):
            ax = axes[r, c]
            d = summary[(summary["model"] == model) & (summary["concept"] == concept)]
            for j, space in enumerate(spaces):
                ds = d[d["space"] == space].set_index("method").reindex(methods)
                x = np.arange(len(methods)) + (j - (len(spaces) - 1) / 2) * width
                y = ds["test_accuracy"].to_numpy()
                err = np.vstack([y - ds["ci_low"].to_numpy(), ds["ci_high"].to_numpy() - y])
                ax.bar(x, y, width=width * 0.9, color=SPACE_COLORS[space], alpha=0.8,
                       label=SPACE_LABELS[space] if (r, c) == (0, 0) else None)
                ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="none", ecolor="k", capsize=3, lw=1)
            ax.axhline(0.5, color="k", ls=":", lw=1)
            ax.set_xticks(np.arange(len(methods)), [METHOD_LABELS[m].replace(" ", "\n", 1) for m in methods],
                          fontsize=8)
            ax.set_ylim(0.3, 1.02)
            ax.set_ylabel("held-out accuracy" if c == 0 else "")
            k = int(d["n_splits"].iloc[0]) if len(d) else 0
            ax.set_title(f"{model}: {concept} ({k} splits)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        ax = axes[r, -1]
        f = found[(found["model"] == model) & (found["concept"] == "pooled")].reset_index(drop=True)
        if "scope" in f:  # overall first, then restricted to one space / one method
            f["label"] = [lbl if sc == "all" else f"  ({sc} only)" for lbl, sc in zip(f["label"], f["scope"])]
        y = np.arange(len(f))[::-1]
        for i, row in f.iterrows():
            color = "tab:green" if row["holds"] else ("tab:red" if row["reversed"] else "tab:gray")
            ax.errorbar(row["difference"], y[i], xerr=[[row["difference"] - row["ci_low"]],
                                                       [row["ci_high"] - row["difference"]]],
                        fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(y, [lbl.replace(" > ", " > ").replace(" >= ", " ≥ ") for lbl in f["label"]], fontsize=7)
        ax.set_xlabel("accuracy difference (pooled over concepts)")
        ax.set_title(f"{model}: the seed's findings", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="lower center", ncol=len(spaces), bbox_to_anchor=(0.5, -0.03), frameon=False)
    fig.suptitle("Concept probes: top-k features by max activation or RSA, on raw activations or SAE "
                 "features; L1 logistic regression, mean and 95% corrected interval over seeded splits",
                 y=1.01, fontsize=10)
    fig.tight_layout()
    save(fig, out_pdf)
