"""Figures 9 and 10: read tidy tables, draw, save. No model is run here.

Every model is drawn in its own style (``styles``, :func:`~stages_of_inference.core.plotting.style_of`:
colour, line style, marker, label; random-weight controls grey and dashed) wherever a
colour stands for a model: the shared-axis comparison panels and the model names in the
per-model panels' titles. Colours inside a per-model panel stand for something else
(attention, score sign, -ing vs other tokens).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..core.plotting import rows_of, save, style_of

KIND_TITLES = {"multi": "words split into several tokens", "single": "single-token words (control)"}
ROLE_MARKERS = {"prediction": "^", "suppression": "v"}
ING_COLOR, OTHER_COLOR = "goldenrod", "slategray"  # not model colours


def _empty(ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.35", wrap=True,
            transform=ax.transAxes)


def _model_title(ax, text: str, style: dict, fontsize: float = 9) -> None:
    """A panel title naming a model, in the model's colour."""
    ax.set_title(text, fontsize=fontsize, color=style["color"])


# -- Figure 9 ---------------------------------------------------------------------------


def layer_profile(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer): the best head's sub-joiner score and its standard error, with
    relative depth."""
    best = scores.loc[scores.groupby(["model", "layer"], sort=False)["score"].idxmax()]
    return best[["model", "layer", "head", "rel_depth", "score", "score_se"]].sort_values(["model", "layer"])


def _profile_panel(ax, models: list[str], scores: pd.DataFrame, styles) -> None:
    """Shared axes: the best head's score per layer against relative depth, every model."""
    profile = layer_profile(scores)
    for model in models:
        g = profile[profile["model"] == model]
        if g.empty:
            continue
        st = style_of(styles, model)
        ax.plot(g["rel_depth"], g["score"], color=st["color"], ls=st["ls"], marker=st["marker"], ms=3.5, lw=1.6,
                label=st["label"])
        ax.fill_between(g["rel_depth"], g["score"] - g["score_se"], g["score"] + g["score_se"], color=st["color"],
                        alpha=0.2, lw=0)
        top = g.loc[g["score"].idxmax()]
        ax.annotate(f"L{int(top['layer'])}H{int(top['head'])}", (top["rel_depth"], top["score"]),
                    xytext=(4, 4), textcoords="offset points", fontsize=7, color=st["color"])
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("relative depth (layer / (n_layers - 1))")
    ax.set_ylabel("sub-joiner score of the layer's best head")
    ax.set_title("(a) best sub-joiner head per layer (± SE over prompts)", fontsize=9)
    ax.legend(title="model", fontsize=7, title_fontsize=7, loc="upper right")


def _top_head_panel(ax, models: list[str], scores: pd.DataFrame, styles) -> None:
    """Each model's top head: attention on the word's earlier sub-tokens vs the control."""
    x = np.arange(len(models))
    for i, model in enumerate(models):
        s = rows_of(scores, model)
        if s.empty:
            continue
        top = s.loc[s["rank"] == 1].iloc[0]
        st = style_of(styles, model)
        ax.bar(i - 0.19, top["word_attention"], 0.36, color=st["color"], edgecolor=st["color"])
        ax.bar(i + 0.19, top["control_attention"], 0.36, color="white", edgecolor=st["color"], hatch="///")
        ax.text(i, max(top["word_attention"], top["control_attention"]) + 0.03,
                f"L{int(top['layer'])}H{int(top['head'])}\nscore {top['score']:.2f} ± {top['score_se']:.2f}",
                ha="center", va="bottom", fontsize=7, color=st["color"])
    ax.set_xticks(x)
    ax.set_xticklabels([style_of(styles, m)["label"].replace(" (", "\n(") for m in models], fontsize=7)
    for label, model in zip(ax.get_xticklabels(), models):
        label.set_color(style_of(styles, model)["color"])
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("attention from the last token")
    ax.legend(handles=[Rectangle((0, 0), 1, 1, fc="0.4", ec="0.4"),
                       Rectangle((0, 0), 1, 1, fc="white", ec="0.4", hatch="///")],
              labels=["on the word's earlier sub-tokens", "single-token control"], fontsize=7, loc="upper left")
    ax.set_title("(b) each model's top head", fontsize=9)


def _score_map(ax, fig, scores: pd.DataFrame, model: str, style: dict, limit: float) -> tuple[int, int]:
    grid = scores.pivot(index="layer", columns="head", values="score").sort_index()
    image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                      interpolation="nearest")
    top = scores.loc[scores["rank"] == 1].iloc[0]
    layer, head = int(top["layer"]), int(top["head"])
    ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="black", lw=1.8))
    n_layers, n_heads = grid.shape
    ax.set_xticks(range(n_heads))
    ax.set_xticklabels(range(n_heads), fontsize=7)
    step = max(1, n_layers // 15)
    ax.set_yticks(range(0, n_layers, step))
    ax.set_yticklabels(range(0, n_layers, step), fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    _model_title(ax, f"{style['label']}: sub-joiner score per head\n"
                     f"top L{layer}H{head} (box): {top['score']:.2f} ± {top['score_se']:.2f}\n"
                     f"{int(top['n_multi'])} multi- / {int(top['n_single'])} single-token prompts", style)
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    bar.set_label("attention on the word's earlier sub-tokens\nminus single-token control", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return layer, head


def _strip(ax, rows: pd.DataFrame) -> None:
    rows = rows.sort_values("position")
    values = rows["attention"].to_numpy()[None, :]
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for x, v in enumerate(values[0]):
        ax.text(x, 0, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=6,
                color="white" if v < 0.6 else "black")
    ax.set_yticks([])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows["token"], rotation=40, ha="right", fontsize=7, rotation_mode="anchor")
    for label, in_word, query in zip(ax.get_xticklabels(), rows["in_word"], rows["is_query"]):
        label.set_color("black" if in_word else "0.45")
        if in_word:
            label.set_fontweight("bold")
        if query:
            label.set_fontstyle("italic")
    ax.tick_params(axis="x", length=0, pad=2)
    first = rows.iloc[0]
    ax.set_ylabel(f"“{first['word']}”\n{int(first['n_subtokens'])} tok", rotation=0, ha="right", va="center",
                  fontsize=7, labelpad=4)


def draw_fig9(models: list[str], scores: pd.DataFrame, examples: pd.DataFrame, styles=None):
    """Figure 9 as a matplotlib figure. Top: (a) the best head's score per layer against
    relative depth and (b) each model's top head, word vs control attention, every model
    on shared axes. Then a row per model: the layers × heads score map (one colour scale
    for all models) and the top head's attention rows (from the last token) for random
    multi-token and single-token prompts, tokens as tick labels."""
    sns.set_theme(style="white", context="paper")
    n_examples = int(examples.groupby(["model", "kind"])["example"].nunique().max()) if len(examples) else 1
    row_height = max(3.2, 0.95 * n_examples + 1.0)
    height = 3.6 + row_height * len(models) + 1.2
    fig = plt.figure(figsize=(19, height))
    outer = fig.add_gridspec(1 + len(models), 3, width_ratios=[1.15, 2.2, 2.2], height_ratios=[3.6] +
                             [row_height] * len(models), wspace=0.32, hspace=0.42, top=1 - 0.75 / height,
                             bottom=0.4 / height)
    top = outer[0, :].subgridspec(1, 2, width_ratios=[2.2, 1], wspace=0.18)
    ax_profile, ax_top = fig.add_subplot(top[0]), fig.add_subplot(top[1])
    if len(scores):
        _profile_panel(ax_profile, models, scores, styles)
        _top_head_panel(ax_top, models, scores, styles)
        limit = max(float(np.nanmax(np.abs(scores["score"].to_numpy(dtype=float)))), 1e-6)
    else:
        _empty(ax_profile, "no sub-joiner scores (too few multi- or single-token prompts; see logs)")
        ax_top.set_axis_off()
        limit = 1.0
    for i, model in enumerate(models, start=1):
        st = style_of(styles, model)
        s, e = rows_of(scores, model), rows_of(examples, model)
        ax_map = fig.add_subplot(outer[i, 0])
        if s.empty:
            _empty(ax_map, f"{st['label']}: no sub-joiner scores\n(too few multi- or single-token prompts; see logs)")
            continue
        layer, head = _score_map(ax_map, fig, s, model, st, limit)
        for col, kind in enumerate(("multi", "single"), start=1):
            k = e[e["kind"] == kind] if len(e) else e
            count = k["example"].nunique() if len(k) else 0
            if count == 0:
                _empty(fig.add_subplot(outer[i, col]), f"no {KIND_TITLES[kind]}")
                continue
            sub = outer[i, col].subgridspec(count, 1, hspace=1.5)
            for j, (_, rows) in enumerate(k.groupby("example")):
                ax = fig.add_subplot(sub[j])
                _strip(ax, rows)
                if j == 0:
                    _model_title(ax, f"{st['label']} L{layer}H{head}: attention from the last token, "
                                     f"{KIND_TITLES[kind]}\n(random prompts; bold = the word's tokens)", st)
    fig.suptitle("Figure 9: sub-joiner heads — attention from a word's last sub-token to its earlier "
                 "sub-tokens, against single-token words", fontsize=12, y=0.995)
    return fig


def plot_fig9(models: list[str], scores: pd.DataFrame, examples: pd.DataFrame, out_pdf, styles=None) -> None:
    save(draw_fig9(models, scores, examples, styles), out_pdf)


# -- Figure 10 --------------------------------------------------------------------------


def _probe_panel(ax, models: list[str], probes: pd.DataFrame, styles) -> None:
    """Shared axes: per model, each selected neuron alone (markers), ensembles of the first
    n neurons (line) and the model's own top-1 accuracy (dotted), in the model's style."""
    max_order = 1
    for model in models:
        p = rows_of(probes, model)
        st = style_of(styles, model)
        if p.empty:
            ax.plot([], [], color=st["color"], ls=st["ls"], label=f"{st['label']}: no probes (too few -ing prompts; "
                                                                    f"see logs)")
            continue
        ens = p[p["probe"] == "ensemble"].sort_values("order")
        n_test = int(ens["n_test"].iloc[0]) if len(ens) else 0
        ax.plot(ens["order"], ens["test_accuracy"], color=st["color"], ls=st["ls"], lw=2, marker=st["marker"], ms=3,
                label=f"{st['label']}: ensemble of the first n ({n_test} held-out prompts)", zorder=4)
        single = p[p["probe"] == "single"]
        for role, marker in ROLE_MARKERS.items():
            g = single[single["role"] == role]
            ax.scatter(g["order"], g["test_accuracy"], marker=marker, s=26, zorder=3, alpha=0.8,
                       facecolor=st["color"] if role == "prediction" else "white", edgecolor=st["color"], lw=1)
        own = p.loc[p["probe"] == "model_top1", "test_accuracy"]
        if len(own):
            ax.axhline(float(own.iloc[0]), color=st["color"], ls=":", lw=2,
                       label=f"{st['label']}: the model's own top-1 ({float(own.iloc[0]):.2f})")
        if len(ens):
            max_order = max(max_order, int(ens["order"].max()))
    ax.axhline(0.5, color="0.6", lw=0.8, ls="-", zorder=0)
    ax.text(0.02, 0.5, "chance", color="0.5", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    handles, labels = ax.get_legend_handles_labels()
    for role, marker in ROLE_MARKERS.items():
        handles.append(Line2D([], [], ls="", marker=marker, color="0.3",
                              mfc="0.3" if role == "prediction" else "white"))
        labels.append(f"one {role} neuron alone")
    ax.legend(handles, labels, fontsize=7, loc="upper right", frameon=True)
    ax.set_ylim(0.35, 1.12)
    ax.set_xlim(0.4, max_order + 0.6)
    ax.set_xticks(range(1, max_order + 1))
    ax.set_xlabel("neurons, ordered by |ing separation| (markers: that neuron alone; lines: the first n)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("(a) linear probes for “the next token ends a word in -ing” (balanced held-out prompts)\n"
                 "vs the model's own top-1 (it says -ing exactly when the label does)", fontsize=9)


def _hist_panel(ax, v: pd.DataFrame, role: str, model: str, style: dict) -> None:
    r = v[v["role"] == role] if len(v) else v
    if r.empty:
        _empty(ax, f"{style['label']}: no {role} neuron")
        return
    bins = np.histogram_bin_edges(r["cosine"], bins=60)
    ax.hist(r.loc[~r["is_ing"], "cosine"], bins=bins, density=True, color=OTHER_COLOR, alpha=0.7,
            label=f"other tokens ({(~r['is_ing']).sum()})")
    ax.hist(r.loc[r["is_ing"], "cosine"], bins=bins, density=True, color=ING_COLOR, alpha=0.75,
            label=f"tokens ending in -ing ({r['is_ing'].sum()})")
    ax.set_yscale("log")
    layer, neuron = int(r["layer"].iloc[0]), int(r["neuron"].iloc[0])
    _model_title(ax, f"(b) {style['label']}: top {role} neuron L{layer}N{neuron}", style)
    ax.set_xlabel("W_U · w_out  (cosine, folded weights)", fontsize=8)
    ax.set_ylabel("density (log)", fontsize=8)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 300)  # headroom on the log axis: the legend sits above the bars
    ax.legend(fontsize=6.5, loc="upper center", ncol=2)


def draw_fig10(models: list[str], probes: pd.DataFrame, vocab: pd.DataFrame, styles=None):
    """Figure 10 as a matplotlib figure. (a) every model on shared axes: probe accuracies
    vs the model's own; (b) per model, vocabulary histograms of the top suppression and
    the top prediction neuron."""
    sns.set_theme(style="whitegrid", context="paper")
    height = max(5.5, 3.0 * len(models) + 0.8)
    fig = plt.figure(figsize=(17, height))
    outer = fig.add_gridspec(len(models), 3, width_ratios=[1.7, 1, 1], wspace=0.28, hspace=0.55,
                             top=1 - 0.8 / height)
    ax = fig.add_subplot(outer[:, 0])
    if len(probes):
        _probe_panel(ax, models, probes, styles)
    else:
        _empty(ax, "no -ing probes (too few -ing prompts or no selected neurons; see logs)")
    for i, model in enumerate(models):
        st = style_of(styles, model)
        v = rows_of(vocab, model)
        for j, role in enumerate(("suppression", "prediction"), start=1):
            _hist_panel(fig.add_subplot(outer[i, j]), v, role, model, st)
    fig.suptitle("Figure 10: predicting the suffix “-ing” — prediction and suppression neurons",
                 fontsize=12, y=0.995)
    return fig


def plot_fig10(models: list[str], probes: pd.DataFrame, vocab: pd.DataFrame, out_pdf, styles=None) -> None:
    save(draw_fig10(models, probes, vocab, styles), out_pdf)
