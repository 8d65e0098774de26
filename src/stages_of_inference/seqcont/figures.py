"""Figures of the sequence-continuation study: read tidy tables, draw. No model runs here.

* ``plot_tasks``    accuracy and logit difference per task (and how many prompts survive);
* ``plot_heads``    mean-ablation effect map (layer x head + MLP) per task and model;
* ``plot_circuits`` each task's circuit, their overlap, successor scores, circuit sizes.

Tasks without prompts, or models without results, keep a labelled (empty) panel. Every
model is drawn in its own style (``core.plotting.style_of``; random-weight controls grey,
labelled): bars share one axis per metric; the maps have a row per model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.plotting import model_palette, plt, save, style_of
from .compute import MLP


def _tasks_in_order(*frames, column="task"):
    from .prompts import TASKS

    seen = set()
    for f in frames:
        if f is not None and column in f:
            seen |= set(f[column].dropna())
    return [t for t in TASKS if t in seen] + sorted(seen - set(TASKS))


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.4", wrap=True,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_tasks(models, tasks: pd.DataFrame, counts: pd.DataFrame, out_pdf, styles=None) -> None:
    """Accuracy (bars) and logit difference (bars; corrupted prompts as black ticks)."""
    names = _tasks_in_order(tasks, counts)
    palette = model_palette(models, styles)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(names) * max(1, len(models)) ** 0.5 + 2), 6.2),
                             sharex=True)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(names))
    for i, model in enumerate(models):
        t = tasks[tasks["model"] == model].set_index("task").reindex(names)
        c = counts[counts["model"] == model].set_index("task").reindex(names)
        xs = x - 0.4 + width * (i + 0.5)
        st = style_of(styles, model)
        axes[0].bar(xs, t["accuracy"].fillna(0), width, color=palette[model], label=st["label"],
                    hatch="//" if st["control"] else None, edgecolor="w" if st["control"] else None)
        axes[1].bar(xs, t["logit_diff"].fillna(0), width, color=palette[model])
        axes[1].errorbar(xs, t["logit_diff"], yerr=t["logit_diff_sd"], fmt="none", ecolor="0.3", lw=0.8)
        axes[1].scatter(xs, t["logit_diff_corrupt"], marker="_", s=120, color="k", zorder=3,
                        label="corrupted prompts" if i == 0 else None)
        for xi, n, acc in zip(xs, c["n_kept"].fillna(0).astype(int), t["accuracy"]):
            axes[0].text(xi, 1.13, f"n={n}", ha="center", va="bottom", fontsize=6)
            if pd.notna(acc):  # the value on the bar: an accuracy of 0 is a result, not a gap
                axes[0].text(xi, acc + 0.01, f"{acc:.2f}", ha="center", va="bottom", fontsize=6)
    axes[0].set_ylim(0, 1.3)
    axes[0].set_ylabel("accuracy (answer is top-1)")
    axes[0].axhline(1, color="0.8", lw=0.6)
    axes[1].axhline(0, color="0.5", lw=0.6)
    axes[1].set_ylabel("logit diff\n(answer − last item)")
    axes[1].set_xticks(x, [n.replace("_words", "\namong words") for n in names], fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", ncol=max(1, len(models)), bbox_to_anchor=(0, 1.18), frameon=False)
    axes[1].legend(fontsize=7, loc="best")
    if not names:
        _empty(axes[0], "no task has single-token prompts for any model")
    fig.suptitle("Sequence continuation: the model on each task (n = prompts kept)", fontsize=10, y=1.02)
    save(fig, out_pdf)


def _grid(df: pd.DataFrame, value: str, n_layers: int, n_heads: int) -> np.ndarray:
    """[layer, head..., MLP] array of ``value``."""
    grid = np.full((n_layers, n_heads + 1), np.nan)
    for r in df.itertuples():
        col = n_heads if r.head == MLP else r.head
        grid[r.layer, col] = getattr(r, value)
    return grid


def _shape(df):
    heads = df.loc[df["head"] != MLP, "head"]
    return int(df["layer"].max()) + 1, int(heads.max()) + 1 if len(heads) else 0


def _layer_axis(ax, n_layers, n_heads, left=True):
    ax.set_xticks(list(range(0, n_heads, max(1, n_heads // 4))) + [n_heads],
                  [str(h) for h in range(0, n_heads, max(1, n_heads // 4))] + ["M"], fontsize=6)
    step = max(1, n_layers // 6)
    ax.set_yticks(range(0, n_layers, step), [str(i) for i in range(0, n_layers, step)], fontsize=6)
    if left:
        ax.set_ylabel("layer", fontsize=7)


def plot_heads(models, components: pd.DataFrame, out_pdf, clip: float = 100.0, styles=None) -> None:
    """Mean-ablation effect on the logit difference, % of |clean|, per component."""
    names = _tasks_in_order(components)
    ncol = max(1, len(names))
    fig, axes = plt.subplots(len(models), ncol, figsize=(1.6 * ncol + 1.5, 3.4 * len(models)), squeeze=False,
                             layout="constrained")
    image = None
    for i, model in enumerate(models):
        m = components[components["model"] == model]
        for j in range(ncol):
            ax = axes[i, j]
            task = names[j] if names else None
            d = m[m["task"] == task] if task else m.iloc[:0]
            label = style_of(styles, model)["label"]
            title = f"{label}\n{task}" if task else label
            ax.set_title(title if j == 0 else (task or ""), fontsize=7)
            if d.empty:
                _empty(ax, "no single-token\nprompts")
                continue
            n_layers, n_heads = _shape(d)
            grid = _grid(d, "effect_pct", n_layers, n_heads)
            image = ax.imshow(np.clip(grid, -clip, clip), aspect="auto", origin="lower", cmap="RdBu",
                              vmin=-clip, vmax=clip, interpolation="nearest")
            ax.axvline(n_heads - 0.5, color="k", lw=0.6)
            _layer_axis(ax, n_layers, n_heads, left=j == 0)
            ax.set_xlabel(f"head | M = MLP\nclean LD {d['logit_diff_clean'].iloc[0]:.2f}", fontsize=6)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
        bar.set_label(f"Δ logit diff when mean-ablated, % of |clean| (clipped ±{clip:.0f})", fontsize=7)
    fig.suptitle("Mean ablation of each head and MLP (red: the ablation lowers the logit difference)", fontsize=9)
    save(fig, out_pdf)


def plot_circuits(models, circuits: pd.DataFrame, summary: pd.DataFrame, overlap: pd.DataFrame,
                  successor: pd.DataFrame, out_pdf, successor_score: str = "lan_torr_barez", styles=None) -> None:
    """Per model: each task's circuit (order 0; shading: share of seeded orders keeping
    the component), the number of tasks sharing each component, the best successor score
    (``successor_score``: which of the two in the table) of each head with circuit members
    outlined, and the circuit sizes per task and order."""
    if len(successor) and "score" in successor:
        successor = successor[successor["score"] == successor_score]
    names = _tasks_in_order(summary)
    ncol = len(names) + 3
    fig, axes = plt.subplots(len(models), ncol, figsize=(1.55 * ncol + 1.5, 3.6 * len(models)), squeeze=False,
                             layout="constrained")
    for i, model in enumerate(models):
        c = circuits[circuits["model"] == model]
        s = summary[summary["model"] == model]
        row = axes[i]
        label = style_of(styles, model)["label"]
        if c.empty:
            for ax in row:
                _empty(ax, "no circuit")
            row[0].set_title(label, fontsize=7)
            continue
        n_layers, n_heads = _shape(c)
        for j, task in enumerate(names):
            ax = row[j]
            d = c[c["task"] == task]
            ss = s[s["task"] == task]
            ax.set_title(f"{label}\n{task}" if j == 0 else task, fontsize=7)
            if d.empty or not ss["solved"].any():
                why = "no prompts" if d.empty else "clean logit diff ≤ 0:\nno circuit"
                _empty(ax, why)
                continue
            freq = d.groupby(["layer", "head"])["in_circuit"].mean().reset_index()
            grid = _grid(freq, "in_circuit", n_layers, n_heads)
            ax.imshow(grid, aspect="auto", origin="lower", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
            first = d[(d["order"] == d["order"].min()) & d["in_circuit"]]
            ax.scatter(np.where(first["head"] == MLP, n_heads, first["head"]), first["layer"], s=6, c="k",
                       marker="s")
            ax.axvline(n_heads - 0.5, color="k", lw=0.6)
            _layer_axis(ax, n_layers, n_heads, left=j == 0)
            s0 = ss.sort_values("order").iloc[0]
            ax.set_xlabel(f"{int(s0.n_heads)} heads, {int(s0.n_mlps)} MLPs\n"
                          f"score {s0.final_score_pct:.1f}% (re-check {s0.recheck_score_pct:.1f}%)", fontsize=6)
        # overlap
        ax = row[len(names)]
        o = overlap[overlap["model"] == model]
        n_tasks = int(s["solved"].groupby(s["task"]).any().sum())
        ax.set_title(f"tasks sharing it\n(of {n_tasks} with a circuit)", fontsize=7)
        if o.empty:
            _empty(ax, "no circuit")
        else:
            grid = _grid(o, "n_tasks", n_layers, n_heads)
            grid = np.nan_to_num(grid, nan=0)
            im = ax.imshow(grid, aspect="auto", origin="lower", cmap="Purples", vmin=0, vmax=max(1, n_tasks),
                           interpolation="nearest")
            for r in o[o["n_tasks"] >= 2].itertuples():
                ax.text(n_heads if r.head == MLP else r.head, r.layer, str(r.n_tasks), ha="center", va="center",
                        fontsize=5, color="w")
            ax.axvline(n_heads - 0.5, color="k", lw=0.6)
            _layer_axis(ax, n_layers, n_heads, left=False)
            fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        # successor scores
        ax = row[len(names) + 1]
        su = successor[successor["model"] == model]
        what = {"lan_torr_barez": "repository's: top k\nof all tokens", "isolated": "isolated: top-1\nof the items"}
        ax.set_title(f"successor score\n({what.get(successor_score, successor_score)})\n○ in a circuit", fontsize=6)
        if su.empty:
            _empty(ax, "no family with\n≥ 2 single-token\nsuccessor pairs")
        else:
            best = su.groupby(["layer", "head"])["successor_score"].max().reset_index()
            grid = _grid(best, "successor_score", n_layers, n_heads)[:, :n_heads]
            im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                           interpolation="nearest")
            inc = o[o["head"] != MLP] if not o.empty else o
            if len(inc):
                ax.scatter(inc["head"], inc["layer"], s=14, facecolors="none", edgecolors="r", lw=0.6)
            top = best.sort_values("successor_score", ascending=False).iloc[0]
            name = f"L{int(top['layer'])}H{int(top['head'])}"
            ax.set_xlabel(f"head\ntop: {name} = {top['successor_score']:.2f}", fontsize=6)
            step = max(1, n_layers // 6)
            ax.set_yticks(range(0, n_layers, step), [str(k) for k in range(0, n_layers, step)], fontsize=6)
            ax.set_xticks(range(0, n_heads, max(1, n_heads // 4)))
            ax.tick_params(labelsize=6)
            fig.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
        # sizes per task and order
        ax = row[len(names) + 2]
        ax.set_title("circuit size per order\n(heads + MLPs)", fontsize=7)
        solved = s[s["solved"]]
        if solved.empty:
            _empty(ax, "no task with\nclean logit diff > 0")
        else:
            xs = {t: k for k, t in enumerate(names)}
            ax.scatter(solved["task"].map(xs), solved["n_components"], c=solved["order"], cmap="tab10", s=14,
                       vmin=0, vmax=9)
            ax.set_xticks(range(len(names)), [n.replace("_words", "+w") for n in names], rotation=60, fontsize=6)
            ax.tick_params(labelsize=6)
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)
            ax.set_ylim(bottom=0)
    fig.suptitle("Sequence-continuation circuits: iterative mean-ablation pruning "
                 "(dots: order-0 circuit; shading: share of orders keeping it)", fontsize=9)
    save(fig, out_pdf)
