"""Figures 4-8 and Table 2: read the per-layer tables, draw, save. No model is run here."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.plotting import line_with_band, model_palette, plt, save, sns

XLABEL = "Relative depth  (layer / (n_layers − 1))"

# figure number -> (summary column, y label, title)
SINGLE_PANEL = {
    4: ("prev5_attn", "Mean attention on each of the previous 5 tokens",
        "Figure 4: attention to the previous five tokens"),
    5: ("attn_mlp_ratio", "mean ‖attn_out‖₂ / mean ‖mlp_out‖₂",
        "Figure 5: attention vs. MLP output norm"),
    7: ("mlp_norm", "mean ‖mlp_out‖₂", "Figure 7: MLP output norm"),
    8: ("lens_entropy", "Logit-lens entropy [bits]", "Figure 8: logit-lens entropy of the next-token distribution"),
}


def _models_differ_in_scale(summary: pd.DataFrame, column: str, factor: float = 30.0) -> bool:
    """Whether the models' typical values differ by more than ``factor`` (a random-weight
    control next to a trained model), so that one linear axis would flatten some."""
    typical = summary.groupby("model")[column].median()
    typical = typical[np.isfinite(typical) & (typical > 0)]
    return len(typical) > 1 and typical.max() / typical.min() > factor


def _log_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_depth_metric(summary: pd.DataFrame, figure: int, out_pdf, styles=None) -> None:
    """One line per model (mean ± SE over tokens) against relative depth."""
    column, ylabel, title = SINGLE_PANEL[figure]
    sns.set_theme(style="whitegrid", context="paper")
    palette = model_palette(summary["model"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, g in summary.groupby("model", sort=False):
        line_with_band(ax, g, f"{column}_mean", f"{column}_se", palette[model], model)
    if figure == 5:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    # a ratio reads best on a log axis; norms too when models differ in scale
    if figure == 5 or (figure == 7 and _models_differ_in_scale(summary, f"{column}_mean")):
        _log_axis(ax)
    if figure == 8:
        ax.set_ylim(bottom=0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(title="model", fontsize=8, title_fontsize=8, frameon=True)
    fig.tight_layout()
    save(fig, out_pdf)


def plot_fig6(summary: pd.DataFrame, counts: pd.DataFrame, out_pdf, styles=None) -> None:
    """Logit-lens KL(P_final ‖ P_layer) (left axis) and prediction / suppression neuron
    counts (right axis) per relative depth; one panel per model."""
    sns.set_theme(style="whitegrid", context="paper")
    models = list(dict.fromkeys(summary["model"]))
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows), squeeze=False)
    kl_color, pred_color, supp_color = "black", "tab:blue", "tab:red"
    for ax, model in zip(axes.flat, models):
        g = summary[summary["model"] == model]
        line_with_band(ax, g, "lens_kl_mean", "lens_kl_se", kl_color, "logit-lens KL")
        ax.set_ylabel("KL(P_final ‖ P_layer) [nats]", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(XLABEL, fontsize=8)
        ax.set_title(model, fontsize=10)
        twin = ax.twinx()
        twin.grid(False)
        c = counts[counts["model"] == model].sort_values("rel_depth")
        twin.plot(c["rel_depth"], c["prediction"], color=pred_color, lw=1.4, marker="^", ms=3,
                  label="prediction neurons")
        twin.plot(c["rel_depth"], c["suppression"], color=supp_color, lw=1.4, marker="v", ms=3,
                  label="suppression neurons")
        twin.set_ylim(bottom=0, top=max(1, c[["prediction", "suppression"]].to_numpy().max()) * 1.1)
        twin.set_ylabel("neurons per layer", fontsize=8)
        twin.yaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = axes.flat[0].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ["logit-lens KL (left axis)", "prediction neurons (right)", "suppression neurons (right)"]
    fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 1.0), fontsize=9)
    fig.suptitle("Figure 6: logit-lens KL to the final distribution, and neuron types", y=1.06, fontsize=11)
    fig.tight_layout()
    save(fig, out_pdf)


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def table2_markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["parameters"] = [f"{human_count(int(n))} ({int(n):,})" for n in shown["parameters"]]
    return (
        "# Table 2: the models\n\n"
        "Every configured model; parameters counted from the loaded weights (tied "
        "embedding and unembedding counted once).\n\n" + shown.to_markdown(index=False) + "\n"
    )
