"""Figures 9 and 10: read tidy tables, draw, save. No model is run here."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from ..core.plotting import rows_of, save

KIND_TITLES = {"multi": "words split into several tokens", "single": "single-token words (control)"}
ROLE_COLORS = {"prediction": "tab:green", "suppression": "tab:purple"}


def _empty(ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.35", wrap=True,
            transform=ax.transAxes)


# -- Figure 9 ---------------------------------------------------------------------------


def _score_map(ax, fig, scores: pd.DataFrame, model: str) -> tuple[int, int]:
    grid = scores.pivot(index="layer", columns="head", values="score").sort_index()
    limit = max(float(np.nanmax(np.abs(grid.to_numpy()))), 1e-6)
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
    ax.set_title(
        f"{model}: sub-joiner score per head\n"
        f"top L{layer}H{head}: {top['score']:.2f} ± {top['score_se']:.2f} "
        f"(word {top['word_attention']:.2f} vs control {top['control_attention']:.2f})\n"
        f"{int(top['n_multi'])} multi- / {int(top['n_single'])} single-token prompts",
        fontsize=9,
    )
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
        if in_word:
            label.set_color("tab:red")
            label.set_fontweight("bold")
        if query:
            label.set_text(label.get_text())
            label.set_fontstyle("italic")
    ax.tick_params(axis="x", length=0, pad=2)
    first = rows.iloc[0]
    ax.set_ylabel(f"“{first['word']}”\n{int(first['n_subtokens'])} tok", rotation=0, ha="right", va="center",
                  fontsize=7, labelpad=4)


def plot_fig9(models: list[str], scores: pd.DataFrame, examples: pd.DataFrame, out_pdf, styles=None) -> None:
    """Per model: the layers × heads score map, and the top head's attention rows (from the
    last token) for random multi-token and single-token prompts, tokens as tick labels."""
    sns.set_theme(style="white", context="paper")
    n_examples = int(examples.groupby(["model", "kind"])["example"].nunique().max()) if len(examples) else 1
    row_height = max(3.2, 0.95 * n_examples + 1.0)
    fig = plt.figure(figsize=(19, row_height * len(models) + 0.6))
    outer = fig.add_gridspec(len(models), 3, width_ratios=[1.15, 2.2, 2.2], wspace=0.32, hspace=0.35)
    for i, model in enumerate(models):
        s, e = rows_of(scores, model), rows_of(examples, model)
        ax_map = fig.add_subplot(outer[i, 0])
        if s.empty:
            _empty(ax_map, f"{model}: no sub-joiner scores\n(too few multi- or single-token prompts; see logs)")
            continue
        layer, head = _score_map(ax_map, fig, s, model)
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
                    ax.set_title(
                        f"{model} L{layer}H{head}: attention from the last token, "
                        f"{KIND_TITLES[kind]}\n(random prompts; red = the word's tokens)",
                        fontsize=9,
                    )
    fig.suptitle("Figure 9: sub-joiner heads — attention from a word's last sub-token to its earlier "
                 "sub-tokens, against single-token words", fontsize=12, y=0.995)
    save(fig, out_pdf)


# -- Figure 10 --------------------------------------------------------------------------


def _probe_panel(ax, p: pd.DataFrame, model: str) -> None:
    single = p[p["probe"] == "single"].sort_values("order")
    for role, g in single.groupby("role"):
        ax.scatter(g["order"], g["test_accuracy"], color=ROLE_COLORS.get(role, "0.4"), s=28, zorder=3,
                   label=f"single {role} neuron", edgecolor="white", lw=0.5)
    ens = p[p["probe"] == "ensemble"].sort_values("order")
    ax.plot(ens["order"], ens["test_accuracy"], color="tab:blue", lw=2.2, marker="o", ms=3,
            label="ensemble of the first n", zorder=4)
    for role in ("prediction", "suppression"):
        g = p[p["probe"] == f"ensemble_{role}"].sort_values("order")
        if len(g):
            ax.plot(g["order"], g["test_accuracy"], color=ROLE_COLORS[role], lw=1.1, ls="--",
                    label=f"ensemble of {role} neurons only")
    own = p.loc[p["probe"] == "model_top1", "test_accuracy"]
    if len(own):
        ax.axhline(float(own.iloc[0]), color="tab:red", ls=":", lw=2,
                   label=f"model top-1 ({float(own.iloc[0]):.2f})")
    ax.axhline(0.5, color="0.6", lw=0.8, ls="-", zorder=0)
    ax.text(0.02, 0.5, "chance", color="0.5", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    n_test = int(ens["n_test"].iloc[0]) if len(ens) else 0
    ax.set_ylim(0.35, 1.02)
    ax.set_xlim(0.4, max(ens["order"].max() if len(ens) else 1, 1) + 0.6)
    ax.set_xticks(range(1, int(ens["order"].max()) + 1) if len(ens) else [])
    ax.set_xlabel("neurons, ordered by |ing separation| (scatter: that neuron alone; lines: first n)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"(a) {model}: linear probes for “next token ends a word in -ing” "
                 f"(balanced, {n_test} held-out prompts)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=2, frameon=True)


def _hist_panel(ax, v: pd.DataFrame, role: str, model: str) -> None:
    r = v[v["role"] == role]
    if r.empty:
        _empty(ax, f"no {role} neuron")
        return
    bins = np.histogram_bin_edges(r["cosine"], bins=60)
    ax.hist(r.loc[~r["is_ing"], "cosine"], bins=bins, density=True, color="0.55", alpha=0.7,
            label=f"other tokens ({(~r['is_ing']).sum()})")
    ax.hist(r.loc[r["is_ing"], "cosine"], bins=bins, density=True, color="tab:orange", alpha=0.7,
            label=f"tokens ending in -ing ({r['is_ing'].sum()})")
    ax.set_yscale("log")
    layer, neuron = int(r["layer"].iloc[0]), int(r["neuron"].iloc[0])
    ax.set_title(f"(b) {model}: top {role} neuron L{layer}N{neuron}", fontsize=9)
    ax.set_xlabel("W_U · w_out  (cosine, folded weights)")
    ax.set_ylabel("density (log)")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 300)  # headroom on the log axis: the legend sits above the bars
    ax.legend(fontsize=7, loc="upper center", ncol=2)


def plot_fig10(models: list[str], probes: pd.DataFrame, vocab: pd.DataFrame, out_pdf, styles=None) -> None:
    """Per model: (a) probe accuracies vs the model's own; (b) vocabulary histograms of the
    top suppression (top) and prediction (bottom) neurons."""
    sns.set_theme(style="whitegrid", context="paper")
    fig = plt.figure(figsize=(15, 5.2 * len(models) + 0.5))
    outer = fig.add_gridspec(len(models), 2, width_ratios=[1.6, 1], wspace=0.2, hspace=0.4)
    for i, model in enumerate(models):
        p, v = rows_of(probes, model), rows_of(vocab, model)
        ax = fig.add_subplot(outer[i, 0])
        if p.empty:
            _empty(ax, f"{model}: no -ing probes (too few -ing prompts or no selected neurons; see logs)")
        else:
            _probe_panel(ax, p, model)
        sub = outer[i, 1].subgridspec(2, 1, hspace=0.6)
        for j, role in enumerate(("suppression", "prediction")):
            _hist_panel(fig.add_subplot(sub[j]), v if len(v) else pd.DataFrame(columns=["role"]), role, model)
    fig.suptitle("Figure 10: predicting the suffix “-ing” — prediction and suppression neurons",
                 fontsize=12, y=0.995)
    save(fig, out_pdf)
