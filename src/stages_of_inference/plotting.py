"""Figures: read tidy tables, draw, save. No model is ever run here."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402


def model_palette(models):
    models = list(dict.fromkeys(models))
    return dict(zip(models, sns.color_palette("tab10", n_colors=max(len(models), 1))))


def line_with_band(ax, df, y, se, color, label):
    df = df.sort_values("rel_depth")
    ax.plot(df["rel_depth"], df[y], color=color, label=label, lw=1.6, marker="o", ms=2.5)
    if se in df:
        ax.fill_between(df["rel_depth"], df[y] - df[se], df[y] + df[se], color=color, alpha=0.25, lw=0)


def save(fig, out_pdf: str | Path) -> None:
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight")
    plt.close(fig)


FIG3_PANELS = (
    ("kl", "KL(P_base ‖ P_intervened) [nats]"),
    ("top1_agree", "Top-1 agreement with baseline"),
    ("entropy_change", "Δ entropy (intervened − base) [bits]"),
)


def plot_fig3(summary, out_pdf) -> None:
    """2 rows (swap, drop) x 3 columns (KL, top-1 agreement, Δentropy) vs relative depth."""
    sns.set_theme(style="whitegrid", context="paper")
    palette = model_palette(summary["model"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.6), sharex=True)
    for row, kind in enumerate(("swap", "drop")):
        sub = summary[summary["kind"].astype(str) == kind]
        for col, (metric, label) in enumerate(FIG3_PANELS):
            ax = axes[row, col]
            for model, g in sub.groupby("model", sort=False):
                line_with_band(ax, g, f"{metric}_mean", f"{metric}_se", palette[model], model)
            ax.set_title(f"{'Adjacent swap' if kind == 'swap' else 'Layer drop'}: {label.split(' [')[0]}", fontsize=10)
            ax.set_ylabel(label, fontsize=9)
            if metric == "top1_agree":
                ax.set_ylim(-0.02, 1.02)
            if metric == "entropy_change":
                ax.axhline(0, color="0.3", lw=0.8, ls="--")
            if row == 1:
                ax.set_xlabel("Relative depth  (layer / (n_layers − 1))")
            ax.set_xlim(-0.02, 1.02)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False,
               bbox_to_anchor=(0.5, 1.04), title="model")
    fig.suptitle("Figure 3: layer swap (top) and layer drop (bottom) vs. the unmodified model",
                 y=1.09, fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)
