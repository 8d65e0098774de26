"""Figures of the concept-features study: read tidy tables, draw. No model is run here.

Every model is drawn in its own style (``core.plotting.style_of``: colour, line style,
marker, label; a random-weight control grey, dashed, hatched bars), so the models share
each panel's axes and compare directly.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..core.plotting import rows_of, save, style_of

METHOD_LABELS = {"maxact": "max activation", "rsa_categorical": "RSA categorical",
                 "rsa_discriminative": "RSA discriminative"}
METHOD_SHORT = {"maxact": "max\nact.", "rsa_categorical": "RSA\ncat.", "rsa_discriminative": "RSA\ndiscr."}
SPACE_LABELS = {"raw": "raw residual", "sae": "SAE features"}


def plot_sae_training(models: Sequence[str], training: pd.DataFrame, quality: pd.DataFrame,
                      features: pd.DataFrame, out_pdf, styles=None) -> None:
    """The models on shared axes: training curve (explained variance, L0, dead features)
    and the distribution of feature firing rates; the held-out quality in the legend."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    handles = []
    all_rates = features["firing_rate"].to_numpy() if len(features) else np.zeros(1)
    floor = 10 ** np.floor(np.log10(max(all_rates[all_rates > 0].min(), 1e-9))) / 10 if (all_rates > 0).any() else 1e-6
    bins = np.linspace(np.log10(floor), 0, 41)
    for model in models:
        st = style_of(styles, model)
        t = rows_of(training, model).sort_values("step")
        q = rows_of(quality, model).iloc[0]
        line = {"color": st["color"], "ls": st["ls"], "lw": 1.4}
        label = (f"{st['label']}: d_sae {int(q['d_sae'])}, held-out EV {q['val_explained_variance']:.3f}, "
                 f"L0 {q['val_l0']:.1f}, never fired {int(q['dead_features'])}")
        handles.append(Line2D([], [], marker=st["marker"], ms=5, label=label, **line))
        axes[0].plot(t["tokens_seen"], t["explained_variance"], **line)
        axes[0].scatter([t["tokens_seen"].max()], [q["val_explained_variance"]], color=st["color"], marker="*",
                        s=110, zorder=3, edgecolor="k", linewidth=0.5)
        axes[1].plot(t["tokens_seen"], t["l0"], marker=st["marker"], ms=3, **line)
        axes[2].plot(t["tokens_seen"], t["dead"] / q["d_sae"], marker=st["marker"], ms=3, **line)
        rates = rows_of(features, model)["firing_rate"].to_numpy()
        axes[3].hist(np.log10(np.clip(rates, floor, None)), bins=bins, histtype="step", **line)
    axes[0].set(xlabel="training tokens", ylabel="explained variance (batch)",
                ylim=(min(0, axes[0].get_ylim()[0]), 1), title="Reconstruction (★ = held-out tokens)")
    axes[1].set(xlabel="training tokens", ylabel="L0 (active features / token)", title="Sparsity")
    axes[1].set_ylim(0, axes[1].get_ylim()[1] * 1.15)
    axes[2].set(xlabel="training tokens", ylabel="fraction dead (not fired recently)", title="Dead features",
                ylim=(-0.02, 1.02))
    axes[3].set(xlabel="log10 firing rate (train + held-out tokens)", ylabel="features",
                title=f"Feature firing rates (never fired: at {np.log10(floor):.0f})")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=1, fontsize=8, bbox_to_anchor=(0.5, -0.04 * len(models)),
               frameon=False)
    fig.suptitle("SAE on the residual stream entering concepts.layer (default the middle block): training and "
                 "quality per model", y=1.02)
    fig.tight_layout()
    save(fig, out_pdf)


def _status(row) -> str:
    return "holds" if row["holds"] else ("reversed" if row["reversed"] else "open")


def plot_concept_methods(models: Sequence[str], summary: pd.DataFrame, found: pd.DataFrame, out_pdf,
                         styles=None) -> None:
    """Held-out accuracy of every (space, method) with 95% intervals: a panel per concept,
    the models side by side in each group; the last panel gives the seed README's three
    findings as paired differences pooled over concepts, one interval per model."""
    concepts = list(dict.fromkeys(summary["concept"]))
    methods = [m for m in METHOD_LABELS if m in set(summary["method"])]
    spaces = [s for s in SPACE_LABELS if s in set(summary["space"])]
    groups = [(s, m) for s in spaces for m in methods]
    n_models = max(len(models), 1)
    fig, axes = plt.subplots(1, len(concepts) + 1, figsize=(4.6 * len(concepts) + 6.2, 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * len(concepts) + [1.35]})
    axes = axes[0]
    width = 0.8 / n_models
    x0 = np.arange(len(groups)) + np.repeat(np.arange(len(spaces)), len(methods)) * 0.5  # a gap between spaces
    for c, concept in enumerate(concepts):
        ax = axes[c]
        n_splits = set()
        for i, model in enumerate(models):
            st = style_of(styles, model)
            d = summary[(summary["model"] == model) & (summary["concept"] == concept)]
            d = d.set_index(["space", "method"]).reindex(groups)
            n_splits |= set(d["n_splits"].dropna().astype(int))
            x = x0 + (i - (n_models - 1) / 2) * width
            y = d["test_accuracy"].to_numpy()
            err = np.vstack([y - d["ci_low"].to_numpy(), d["ci_high"].to_numpy() - y])
            ax.bar(x, y, width=width * 0.92, color=st["color"], alpha=0.85, hatch="//" if st.get("control") else None,
                   edgecolor="white" if not st.get("control") else "k", lw=0.5)
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="none", ecolor="k", capsize=2, lw=0.9)
        ax.axhline(0.5, color="k", ls=":", lw=1)
        ax.set_xticks(x0, [METHOD_SHORT[m] for _, m in groups], fontsize=8)
        for j, space in enumerate(spaces):
            mid = x0[j * len(methods): (j + 1) * len(methods)].mean()
            ax.text(mid, 1.035, SPACE_LABELS[space], ha="center", va="bottom", fontsize=9,
                    transform=ax.get_xaxis_transform())
            if j:
                ax.axvline((x0[j * len(methods) - 1] + x0[j * len(methods)]) / 2, color="0.6", lw=0.8)
        ax.set_ylim(0.3, 1.0)
        ax.set_ylabel("held-out accuracy" if c == 0 else "")
        splits = "/".join(str(k) for k in sorted(n_splits)) or "0"
        ax.set_title(f"{concept} ({splits} splits)\n", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    # the findings: one row per (finding, scope), the models offset within a row
    ax = axes[-1]
    pooled = found[found["concept"] == "pooled"]
    keys = list(dict.fromkeys(zip(pooled["finding"], pooled["scope"])))
    labels = {}
    for r in pooled.itertuples():
        scope = SPACE_LABELS.get(r.scope, METHOD_LABELS.get(r.scope, r.scope))
        labels[(r.finding, r.scope)] = r.label.replace(" >= ", " ≥ ") if r.scope == "all" else f"   ({scope} only)"
    y_of = {k: len(keys) - 1 - i for i, k in enumerate(keys)}
    offset = 0.6 / n_models
    for i, model in enumerate(models):
        st = style_of(styles, model)
        f = pooled[pooled["model"] == model]
        for _, row in f.iterrows():
            y = y_of[(row["finding"], row["scope"])] + ((n_models - 1) / 2 - i) * offset
            status = _status(row)
            marker = "X" if status == "reversed" else st["marker"]
            face = "white" if status == "open" else st["color"]
            ax.errorbar(row["difference"], y, xerr=[[row["difference"] - row["ci_low"]],
                                                    [row["ci_high"] - row["difference"]]],
                        fmt=marker, color=st["color"], mfc=face, mec=st["color"], ms=6, capsize=2.5, lw=1.2,
                        ls="none")
    for k in range(len(keys) - 1):  # separate the three findings
        if keys[k][0] != keys[k + 1][0]:
            ax.axhline(y_of[keys[k]] - 0.5, color="0.6", lw=0.8)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks([y_of[k] for k in keys], [labels[k] for k in keys], fontsize=8)
    ax.set_ylim(-0.6, len(keys) - 0.4)
    ax.set_xlabel("held-out accuracy difference (pooled over concepts)")
    ax.set_title("The seed README's three findings\n", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    model_handles = [Patch(facecolor=style_of(styles, m)["color"], hatch="//" if style_of(styles, m).get("control")
                           else None, label=style_of(styles, m)["label"]) for m in models]
    status_handles = [Line2D([], [], marker="o", color="0.3", mfc="0.3", ls="none", label="finding holds (95% CI > 0)"),
                      Line2D([], [], marker="o", color="0.3", mfc="white", ls="none", label="CI includes 0"),
                      Line2D([], [], marker="X", color="0.3", ls="none", label="reversed (95% CI < 0)")]
    fig.legend(handles=model_handles + status_handles, loc="lower center", ncol=len(model_handles) + 3,
               bbox_to_anchor=(0.5, -0.07), frameon=False, fontsize=9)
    fig.suptitle("Concept probes: top-k features by max activation or RSA, on raw activations or SAE features; "
                 "L1 logistic regression, mean and 95% corrected interval over seeded splits", y=1.03, fontsize=10)
    fig.tight_layout()
    save(fig, out_pdf)
