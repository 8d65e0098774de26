"""Figures 4-8 and Table 2: read the per-layer tables, draw, save. No model is run here.

Every model is drawn in its own style (:func:`~stages_of_inference.core.plotting.style_of`:
fixed colours for trained models, grey and dashed for random-weight controls). Where the
authors' notebooks define a statistic differently from the workflow (Figure 4's previous-
five attention, the logit lens of Figures 6 and 8), both are drawn and labelled; the first
panel (Figure 6: the solid line) is the definition a reader of the paper expects, chosen in
:mod:`stages_of_inference.depth.compute` (module docstring): Figure 4 the authors'
convention, Figures 6 and 8 each layer's own norm.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.plotting import line_with_band, plt, save, sns, style_of

XLABEL = "Relative depth  (layer / (n_layers − 1))"
XLABEL_AUTHORS = "Relative depth as in the authors' notebook\n(point / n_layers; 0 = the embedding)"

# figure number -> (summary column, y label, title) for the one-panel figures
SINGLE_PANEL = {
    5: ("attn_mlp_ratio", "mean ‖attn_out‖₂ / mean ‖mlp_out‖₂",
        "Figure 5: attention vs. MLP output norm (what each block adds to the residual stream)"),
    7: ("mlp_norm", "mean ‖mlp_out‖₂", "Figure 7: MLP output norm (what each MLP adds to the residual stream)"),
}
FALLS_RHO = -0.8  # "falls with depth": Spearman correlation of entropy with depth at most this,
FALLS_BY = 0.05  # and a fall of at least this fraction of its highest value (flat lines do not fall)
PREDICTION_COLOUR, SUPPRESSION_COLOUR = "#b8860b", "#6a3d9a"  # not a model colour (core.plotting)


def blocks(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of the blocks (the embedding, layer -1, left out)."""
    return summary[summary["layer"] >= 0]


def _models(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary["model"]))


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


def _lines(ax, summary, column, styles, x="rel_depth", labels=None) -> None:
    """One line per model (mean ± SE band) of ``column`` against ``x``."""
    for model, g in summary.groupby("model", sort=False):
        style = style_of(styles, model)
        if labels:
            style["label"] = labels.get(model, style["label"])
        line_with_band(ax, g.assign(rel_depth=g[x]), f"{column}_mean", f"{column}_se", style)


def _legend(ax, **kwargs) -> None:
    ax.legend(title="model", fontsize=8, title_fontsize=8, frameon=True, **kwargs)


def plot_depth_metric(summary: pd.DataFrame, figure: int, out_pdf, styles=None) -> None:
    """Figures 5 and 7: one line per model (mean ± SE over tokens) against relative depth."""
    column, ylabel, title = SINGLE_PANEL[figure]
    summary = blocks(summary)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    _lines(ax, summary, column, styles)
    if figure == 5:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    # a ratio reads best on a log axis; norms too when models differ in scale
    if figure == 5 or _models_differ_in_scale(summary, f"{column}_mean"):
        _log_axis(ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend(ax)
    fig.tight_layout()
    save(fig, out_pdf)


def _percent_below(summary: pd.DataFrame, low: str, high: str) -> dict[str, tuple[float, float]]:
    """Per model: the range over layers of how much lower ``low`` is than ``high``, in %."""
    out = {}
    for model, g in summary.groupby("model", sort=False):
        pct = 100 * (1 - g[f"{low}_mean"] / g[f"{high}_mean"])
        pct = pct[np.isfinite(pct)]
        if len(pct):
            out[model] = (float(pct.min()), float(pct.max()))
    return out


def plot_fig4(summary: pd.DataFrame, out_pdf, styles=None) -> None:
    """Figure 4, two panels sharing the y axis: the authors' convention (first, the
    default) and the workflow's (queries with five earlier tokens)."""
    summary = blocks(summary)
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4), sharey=True)
    panels = (
        ("prev5_attn_authors", "The authors' convention (attention_prev5.ipynb): every entry of\n"
         "sub-diagonals 1–5, queries 1–4 included; per document, then over documents"),
        ("prev5_attn", "Queries with five earlier tokens only (q ≥ 5): the same five keys\n"
         "for every query; tokens pooled"),
    )
    for ax, (column, title) in zip(axes, panels):
        _lines(ax, summary, column, styles)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(XLABEL)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylim(bottom=0)  # after both panels: the shared top covers both
    axes[0].set_ylabel("Mean attention on each of the previous 5 tokens")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8.5,
               bbox_to_anchor=(0.5, -0.07))
    fig.suptitle("Figure 4: attention to the previous five tokens (mean ± SE)", fontsize=11)
    fig.tight_layout()
    below = _percent_below(summary, "prev5_attn", "prev5_attn_authors")
    text = ";  ".join(f"{style_of(styles, m)['label']} {lo:.1f}–{hi:.1f} %" for m, (lo, hi) in below.items())
    if text:
        fig.text(0.5, -0.1, "How much lower the right panel is than the left, per layer:  " + text,
                 ha="center", va="top", fontsize=8, color="0.25")
    save(fig, out_pdf)


def entropy_trend(g: pd.DataFrame, column: str) -> tuple[float, bool]:
    """``(rho, falls)``: the Spearman correlation of a model's mean ``column`` with depth
    (its points in order), and whether it falls with depth: ``rho <= FALLS_RHO`` and
    a range of at least ``FALLS_BY`` of its highest value."""
    g = g.sort_values("layer")
    values = g[f"{column}_mean"]
    if values.notna().sum() < 3:
        return float("nan"), False
    rho = float(pd.Series(np.arange(len(g)), index=g.index).corr(values, method="spearman"))
    top = float(values.max())
    return rho, bool(rho <= FALLS_RHO and top > 0 and (top - float(values.min())) >= FALLS_BY * top)


def plot_fig8(summary: pd.DataFrame, out_pdf, styles=None) -> None:
    """Figure 8, two panels sharing the y axis: the logit lens with each layer's own norm
    (first, the default; the blocks at ``rel_depth``) and the authors' lens (the final
    layer's norm scale on every point; the embedding and every block at the authors'
    ``rel_depth_authors``). Each panel's title says in which models the entropy falls with
    depth (:func:`entropy_trend`: Spearman ρ of entropy with depth ≤ :data:`FALLS_RHO`, by
    at least :data:`FALLS_BY` of its highest value) and gives every model's ρ; dotted lines
    mark the entropy of the uniform distribution over each model's vocabulary."""
    from matplotlib.lines import Line2D

    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.9), sharey=True)
    panels = (
        ("lens_entropy", blocks(summary), "rel_depth", XLABEL,
         "Logit lens: each layer's own final-norm scale (the method the paper names)"),
        ("lens_entropy_authors", summary, "rel_depth_authors", XLABEL_AUTHORS,
         "The authors' lens: every layer ÷ the FINAL layer's norm scale\n"
         "(entropy_calculation.ipynb, TransformerLens issue #1076)"),
    )
    top = 0.0
    for ax, (column, rows, x, xlabel, title) in zip(axes, panels):
        _lines(ax, rows, column, styles, x=x)
        top = max(top, float(np.nanmax(rows[f"{column}_mean"] + rows[f"{column}_se"].fillna(0))))
        trends = {m: entropy_trend(g, column) for m, g in rows.groupby("model", sort=False)}
        rho = {m: r for m, (r, _) in trends.items()}
        falls = [m for m, (_, f) in trends.items() if f]
        verdict = ("FALLS with depth in: " + ", ".join(falls)) if falls else "falls with depth in none of the models"
        trend = ", ".join(f"{m} {r:+.2f}" for m, r in rho.items())
        ax.set_title(f"{title}\n{verdict}  (ρ: {trend})", fontsize=8.5)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
    handles, labels = axes[0].get_legend_handles_labels()
    if "d_vocab" in summary:
        for model, g in summary.groupby("model", sort=False):
            uniform = math.log2(float(g["d_vocab"].iloc[0]))
            top = max(top, uniform)
            for ax in axes:
                ax.axhline(uniform, color=style_of(styles, model)["color"], lw=0.9, ls=":", alpha=0.9)
        handles.append(Line2D([], [], color="0.3", lw=0.9, ls=":"))
        labels.append("uniform over the model's vocabulary (log₂ V)")
    axes[0].set_ylim(0, top * 1.04 if top > 0 else 1)
    axes[0].set_ylabel("Logit-lens entropy of the next token [bits]")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8.5,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"Figure 8: logit-lens entropy (mean ± SE); ρ: Spearman correlation with depth; "
                 f"'falls': ρ ≤ {FALLS_RHO:g} and by ≥ {FALLS_BY:.0%} of its highest value", fontsize=11)
    fig.tight_layout()
    save(fig, out_pdf)


def plot_fig6(summary: pd.DataFrame, counts: pd.DataFrame, out_pdf, styles=None) -> None:
    """Figure 6, one panel per model: logit-lens KL(P_final ‖ P_layer) on the left axis in
    the model's colour (solid: each layer's own norm, the default; dotted: the authors'
    lens), prediction and suppression neuron counts on the right axis."""
    from matplotlib.lines import Line2D

    summary = blocks(summary)
    sns.set_theme(style="whitegrid", context="paper")
    models = _models(summary)
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.7 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        style = style_of(styles, model)
        g = summary[summary["model"] == model]
        line_with_band(ax, g, "lens_kl_mean", "lens_kl_se", style)
        authors = {**style, "ls": ":", "marker": "."}
        line_with_band(ax, g, "lens_kl_authors_mean", "lens_kl_authors_se", authors)
        top = float(np.nanmax(g[["lens_kl_mean", "lens_kl_authors_mean"]].to_numpy()))
        typical = float(np.nanmedian(g[["lens_kl_mean", "lens_kl_authors_mean"]].to_numpy()))
        if typical > 0 and top / typical > 8:  # one early layer far above the rest: linear to 1, log above
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(bottom=0, top=top * 1.08 if top > 0 else 1)
        ax.set_ylabel("KL(P_final ‖ P_layer) [nats]", fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(XLABEL, fontsize=8)
        ax.set_title(style["label"], fontsize=10, color=style["color"])
        twin = ax.twinx()
        twin.grid(False)
        c = counts[counts["model"] == model].sort_values("rel_depth")
        twin.plot(c["rel_depth"], c["prediction"], color=PREDICTION_COLOUR, lw=1.2, marker="^", ms=3.5)
        twin.plot(c["rel_depth"], c["suppression"], color=SUPPRESSION_COLOUR, lw=1.2, marker="v", ms=3.5)
        most = c[["prediction", "suppression"]].to_numpy().max() if len(c) else 0
        twin.set_ylim(bottom=0, top=max(1, most) * 1.1)
        twin.set_ylabel("neurons per layer", fontsize=8)
        twin.yaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="0.2", ls="-", marker="o", ms=3),
               Line2D([], [], color="0.2", ls=":", marker=".", ms=4),
               Line2D([], [], color=PREDICTION_COLOUR, marker="^", ms=4),
               Line2D([], [], color=SUPPRESSION_COLOUR, marker="v", ms=4)]
    controls = any(style_of(styles, m).get("control") for m in models)
    labels = ["KL, each layer's own norm (left axis" + ("; random weights: dashed)" if controls else ")"),
              "KL, the authors' lens: the final layer's norm scale (left)",
              "prediction neurons (right)", "suppression neurons (right)"]
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.0), fontsize=8.5)
    fig.suptitle("Figure 6: logit-lens KL to the final distribution (mean ± SE), and neuron types",
                 y=1.09, fontsize=11)
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
