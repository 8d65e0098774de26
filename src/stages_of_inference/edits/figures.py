"""Layer-edits figures: read the tidy tables (``compute``), draw. No model is run here.

Every model is drawn in its own style (``core.plotting.style_of``: the random-weight
control grey, dashed, labelled); where a panel holds several models they share its axes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.plotting import plt, save, sns, style_of

METRICS = (
    ("kl", "KL(P_base ‖ P_edit) [nats]"),
    ("top1_agree", "top-1 agreement with base"),
    ("accuracy_retained", "accuracy retained (edit / base)"),
)
PREDICTOR_LABELS = {
    "block_influence": "Block Influence (ShortGPT; Σ over the window)",
    "angular_last": "angular distance d(ℓ, ℓ+n), last token (Gromov)",
    "angular_tokens": "angular distance d(ℓ, ℓ+n), all tokens",
}


def _models(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["model"].astype(str)))


def _metric(ax, g, metric, x, style, label=None, **kw):
    """A model's line of ``metric`` against ``x`` with a ± SE band (no band for a ratio)."""
    g = g.sort_values(x)
    y = g[metric if metric == "accuracy_retained" else f"{metric}_mean"]
    ax.plot(g[x], y, color=style["color"], ls=style["ls"], marker=style["marker"], ms=3, lw=1.4,
            label=style["label"] if label is None else label, **kw)
    se = f"{metric}_se"
    if metric != "accuracy_retained" and se in g:
        ax.fill_between(g[x], y - g[se], y + g[se], color=style["color"], alpha=0.18, lw=0)


def _finish_metric_axis(ax, metric):
    if metric == "kl":
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(bottom=0)
    elif metric == "top1_agree":
        ax.set_ylim(-0.03, 1.03)
    else:
        ax.axhline(1, color="0.4", lw=0.7, ls=":")


def _legend(fig, axes, ncol=None):
    handles, labels = [], []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="upper center", ncol=ncol or min(len(labels), 4), frameon=False,
               bbox_to_anchor=(0.5, 1.0), fontsize=9)


# -- CKA ----------------------------------------------------------------------------------


def plot_cka(cka: pd.DataFrame, out_pdf, styles=None) -> None:
    """One heat map per model: linear CKA (unbiased HSIC) between the residual streams
    after blocks a and b, on a fixed 0-1 scale."""
    sns.set_theme(style="white", context="paper")
    models = _models(cka)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 0.8, 4.2), squeeze=False)
    image = None
    for ax, model in zip(axes[0], models):
        g = cka[cka["model"].astype(str) == model]
        n = int(g["n_layers"].iloc[0])
        grid = np.full((n, n), np.nan)
        grid[g["layer_a"].to_numpy(), g["layer_b"].to_numpy()] = g["cka"].to_numpy()
        image = ax.imshow(grid, cmap="magma", vmin=0, vmax=1, origin="lower", interpolation="nearest")
        style = style_of(styles, model)
        ax.set_title(f"{style['label']}\n{int(g['documents'].iloc[0])} documents × "
                     f"{int(g['tokens_per_document'].iloc[0])} tokens", fontsize=9, color=style["color"])
        ticks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("block b (residual after it)")
        ax.set_ylabel("block a (residual after it)")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, pad=0.02, label="linear CKA (unbiased HSIC)")
    fig.suptitle("Representation similarity across depth: CKA of the residual stream after each block",
                 fontsize=11, y=1.02)
    save(fig, out_pdf)


# -- windows ------------------------------------------------------------------------------


def plot_windows(summary: pd.DataFrame, out_pdf, styles=None) -> None:
    """Windows of n dropped blocks: a row per n, a column per metric (KL, top-1
    agreement, accuracy retained) against the relative depth of the window's centre;
    every model in its style."""
    sns.set_theme(style="whitegrid", context="paper")
    df = summary[summary["family"].astype(str) == "window"]
    widths = sorted(df["width"].unique())
    fig, axes = plt.subplots(len(widths), len(METRICS), figsize=(4.3 * len(METRICS), 2.7 * len(widths) + 0.6),
                             sharex=True, squeeze=False)
    for row, n in enumerate(widths):
        sub = df[df["width"] == n]
        for col, (metric, label) in enumerate(METRICS):
            ax = axes[row, col]
            for model in _models(sub):
                _metric(ax, sub[sub["model"].astype(str) == model], metric, "rel_depth", style_of(styles, model))
            _finish_metric_axis(ax, metric)
            source = "robustness study's drop" if (sub["source"] == "robustness").all() else "dropped"
            ax.set_title(f"n = {n} {'block' if n == 1 else 'consecutive blocks'} ({source}): "
                         f"{label.split(' [')[0].split(' (')[0]}", fontsize=9)
            ax.set_ylabel(label, fontsize=8)
            if row == len(widths) - 1:
                ax.set_xlabel("relative depth of the window's centre")
            ax.set_xlim(-0.02, 1.02)
    _legend(fig, axes)
    fig.suptitle("Dropping n consecutive blocks at every depth", fontsize=11, y=1.0 + 0.35 / (2.7 * len(widths)))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.7 * len(widths) + 0.6)))
    save(fig, out_pdf)


# -- Painters -----------------------------------------------------------------------------


def _painters_label(row) -> str:
    if row["kind"] == "parallel":
        return "parallel" if row["loops"] == 1 else f"looped parallel ×{row['loops']}"
    return {"middle_repeat": "middle repeat"}.get(row["kind"], row["kind"])


def plot_painters(summary: pd.DataFrame, out_pdf, styles=None) -> None:
    """Transformer-Layers-as-Painters variants on the middle blocks: grouped bars per
    variant, one bar per model (± SE), a column per metric; a row per Painters start
    (the k-th smallest start of each model)."""
    sns.set_theme(style="whitegrid", context="paper")
    df = summary[summary["family"].astype(str) == "painters"].copy()
    fig_rows = []
    if len(df):
        df["variant"] = df.apply(_painters_label, axis=1)
        df["start_rank"] = df.groupby("model", observed=True)["painters_start"].rank(method="dense").astype(int)
        fig_rows = sorted(df["start_rank"].unique())
    rows = max(len(fig_rows), 1)
    fig, axes = plt.subplots(rows, len(METRICS), figsize=(4.8 * len(METRICS), 3.2 * rows + 0.6), squeeze=False)
    if not len(df):
        for ax in axes.ravel():
            ax.text(0.5, 0.5, "no Painters plan (no model has a non-empty middle)", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
    models = _models(df) if len(df) else []
    order = list(dict.fromkeys(df.sort_values(["kind", "loops"])["variant"])) if len(df) else []
    width = 0.8 / max(len(models), 1)
    for r, rank in enumerate(fig_rows):
        sub = df[df["start_rank"] == rank]
        starts = ", ".join(f"{m}: s = {int(g['painters_start'].iloc[0])}, middle {int(g['first'].iloc[0])}-"
                           f"{int(g['last'].iloc[0])} of {int(g['n_layers'].iloc[0])}"
                           for m, g in sub.groupby("model", observed=True, sort=False))
        for c, (metric, label) in enumerate(METRICS):
            ax = axes[r, c]
            for i, model in enumerate(models):
                g = sub[sub["model"].astype(str) == model].set_index("variant").reindex(order)
                style = style_of(styles, model)
                x = np.arange(len(order)) + (i - (len(models) - 1) / 2) * width
                y = g[metric if metric == "accuracy_retained" else f"{metric}_mean"].to_numpy(dtype=float)
                err = None if metric == "accuracy_retained" else g[f"{metric}_se"].to_numpy(dtype=float)
                ax.bar(x, y, width=width * 0.95, color=style["color"], alpha=0.55 if style.get("control") else 0.9,
                       hatch="//" if style.get("control") else None, edgecolor=style["color"], yerr=err,
                       error_kw=dict(lw=0.8, capsize=1.5), label=style["label"])
            ax.set_xticks(np.arange(len(order)))
            ax.set_xticklabels(order, rotation=25, ha="right", fontsize=8)
            _finish_metric_axis(ax, metric)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(label.split(" [")[0].split(" (")[0], fontsize=9)
        axes[r, 0].annotate(starts, xy=(0, 1.13), xycoords="axes fraction", fontsize=7.5, color="0.25")
    _legend(fig, axes)
    fig.suptitle("Transformer Layers as Painters: the middle blocks skipped, repeated, reordered or run in parallel",
                 fontsize=11, y=1.0 + 0.45 / (3.2 * rows))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.2 * rows + 0.6)))
    save(fig, out_pdf)


# -- repeats ------------------------------------------------------------------------------


def plot_repeats(summary: pd.DataFrame, out_pdf, styles=None) -> None:
    """Repeated blocks: a row per number of extra copies k, a column per metric. Ranges
    of one width at every start are lines against the relative depth of the range's
    centre; the other ranges (``repeat_spans``) are markers with a bar over the blocks
    they repeat."""
    sns.set_theme(style="whitegrid", context="paper")
    df = summary[summary["family"].astype(str) == "repeat"]
    copies = sorted(df["copies"].dropna().unique()) or [1]
    fig, axes = plt.subplots(len(copies), len(METRICS), figsize=(4.3 * len(METRICS), 2.9 * len(copies) + 0.6),
                             sharex=True, squeeze=False)
    for r, k in enumerate(copies):
        sub = df[df["copies"] == k]
        for c, (metric, label) in enumerate(METRICS):
            ax = axes[r, c]
            for model in _models(sub):
                g = sub[sub["model"].astype(str) == model]
                style = style_of(styles, model)
                n_layers = int(g["n_layers"].iloc[0])
                counts = g.groupby("width")["first"].nunique()
                full = [w for w, cnt in counts.items() if cnt == n_layers - w + 1]
                for w in full:
                    lw_label = style["label"] if w == min(full) else "_"
                    line = g[g["width"] == w]
                    _metric(ax, line, metric, "rel_depth", style, label=lw_label if w == 1 else
                            f"{style['label']}, ranges of {w}", alpha=1.0 if w == min(full) else 0.6)
                spans = g[~g["width"].isin(full)]
                y = spans[metric if metric == "accuracy_retained" else f"{metric}_mean"]
                ax.errorbar(spans["rel_depth"], y, xerr=[spans["rel_depth"] - spans["rel_first"],
                                                         spans["rel_last"] - spans["rel_depth"]],
                            fmt="D", ms=6, color=style["color"], mec="black", mew=0.6, lw=1.2, capsize=2,
                            label="_" if not len(spans) else f"{style['label']}: a wider range")
            _finish_metric_axis(ax, metric)
            ax.set_title(f"each block run {int(k) + 1}× in place: {label.split(' [')[0].split(' (')[0]}", fontsize=9)
            ax.set_ylabel(label, fontsize=8)
            if r == len(copies) - 1:
                ax.set_xlabel("relative depth of the repeated range's centre (bars: its blocks)")
            ax.set_xlim(-0.02, 1.02)
    _legend(fig, axes, ncol=3)
    fig.suptitle("Repeating blocks in place (shared weights)", fontsize=11, y=1.0 + 0.5 / (2.9 * len(copies)))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / (2.9 * len(copies) + 0.6)))
    save(fig, out_pdf)


# -- predicted vs measured ------------------------------------------------------------------


def _rho(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.2f}"


def plot_drop_predictors(predictors: pd.DataFrame, spearman: pd.DataFrame, out_pdf, styles=None) -> None:
    """Predicted vs measured: a row per window width n, a column per predictor; each
    window a point (predictor value, measured KL of dropping it), every model in its style
    with Spearman's rho (KL; accuracy retained) in the legend. The window a predictor
    picks (its minimum) is ringed; the least harmful window by measured KL is starred."""
    sns.set_theme(style="whitegrid", context="paper")
    widths = sorted(predictors["width"].unique())
    preds = [p for p in PREDICTOR_LABELS if p in set(predictors["predictor"])]
    fig, axes = plt.subplots(len(widths), len(preds), figsize=(4.6 * len(preds), 3.3 * len(widths) + 0.5),
                             squeeze=False)
    rho = spearman.set_index(["model", "width", "predictor", "measure"])["rho"]
    for r, n in enumerate(widths):
        for c, pred in enumerate(preds):
            ax = axes[r, c]
            sub = predictors[(predictors["width"] == n) & (predictors["predictor"] == pred)]
            for model in _models(sub):
                g = sub[sub["model"].astype(str) == model].sort_values("first")
                style = style_of(styles, model)
                r_kl = rho.get((model, n, pred, "kl"), np.nan)
                r_acc = rho.get((model, n, pred, "accuracy_retained"), np.nan)
                ax.plot(g["value"], g["kl_mean"], ls="none", marker=style["marker"], ms=4, color=style["color"],
                        alpha=0.8, label=f"{style['label']}: ρ_KL = {_rho(r_kl)}, ρ_acc = {_rho(r_acc)}")
                picked = g[g["pick"]]
                ax.plot(picked["value"], picked["kl_mean"], ls="none", marker="o", ms=11, mfc="none",
                        mec=style["color"], mew=1.6, label="_")
                best = g.nsmallest(1, "kl_mean")
                ax.plot(best["value"], best["kl_mean"], ls="none", marker="*", ms=12, color=style["color"],
                        mec="black", mew=0.5, label="_")
            ax.set_yscale("symlog", linthresh=0.01)
            ax.set_ylim(bottom=0)
            ax.set_xlabel(PREDICTOR_LABELS[pred], fontsize=8)
            ax.set_ylabel(f"measured KL of dropping {n} block{'s' if n > 1 else ''} [nats]", fontsize=8)
            ax.set_title(f"n = {n}", fontsize=9)
            ax.legend(fontsize=6.5, loc="upper left", frameon=True, framealpha=0.8)
    ax = axes[0, 0]
    ax.plot([], [], ls="none", marker="o", ms=9, mfc="none", mec="0.2", label="the predictor's pick (its minimum)")
    ax.plot([], [], ls="none", marker="*", ms=10, color="0.5", mec="black", label="least harmful (measured)")
    ax.legend(fontsize=6.5, loc="upper left", frameon=True, framealpha=0.8)
    fig.suptitle("Do cheap residual-stream metrics pick the blocks whose removal hurts least?", fontsize=11, y=1.0)
    fig.tight_layout()
    save(fig, out_pdf)
