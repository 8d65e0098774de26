"""Self-repair figures: read the tidy tables (compute.py), draw. No model is run here.

Every model is drawn in its own style (``core.plotting.style_of``: fixed colour, line
style, marker and label; random-weight controls grey and dashed). The summary figure puts
all models on shared axes (relative depth for per-layer curves); the per-token figure
has a row per model (its heads are its own)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.plotting import plt, save, sns, style_of

RATIO_PARTS = (("sr_norm", "final norm"), ("sr_mlp", "MLPs"), ("sr_attn", "later attention"))


def _models(heads: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(heads["model"]))


def _setting(heads: pd.DataFrame) -> str:
    """The definition the tables were computed with (the per-head table's last columns)."""
    cols = [c for c in ("ablation", "target", "positions") if c in heads]
    if not cols:
        return ""
    row = heads[cols].drop_duplicates()
    if len(row) != 1:
        return "mixed settings"
    r = row.iloc[0]
    what = {"next": "true next token", "top1": "top-1 prediction"}
    text = f"{r['ablation']} ablation, {what.get(r['target'], r['target'])}"
    if "centre_unembed" in heads and bool(heads["centre_unembed"].iloc[0]):
        text += ", centred logits"
    return text


def _per_layer_ratio(g: pd.DataFrame, col: str) -> pd.Series:
    """Per layer: the part summed over the heads with DE > 0, over their summed DE."""
    ok = g[g["de"] > 0].groupby("rel_depth")
    return ok[col].sum() / ok["de"].sum()


def plot_self_repair(heads: pd.DataFrame, out_pdf, top_fraction: float | None = None, styles=None) -> None:
    """All models on shared axes: (a) self-repair vs direct effect per head (means over each
    head's top tokens); (b) the fraction of the direct effect given back per layer against
    relative depth; (c) per head, the share of its direct effect repaired by the final norm
    (the study's clipped per-token percentage); (d-f) the parts of the repair per layer
    (final norm, MLPs, later attention; on sandwich-norm models the ablated layer's own
    post-attention norm, dotted, in the attention panel)."""
    sns.set_theme(style="whitegrid", context="paper")
    models = _models(heads)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.6))
    top = f"top {top_fraction:.0%} tokens by DE" if top_fraction else "top tokens by DE"
    ax = axes[0, 0]
    hi = lo = 0.0
    for model in models:
        g = heads[heads["model"] == model]
        st = style_of(styles, model)
        n_half = int(((g["self_repair"] > g["de"] / 2) & (g["de"] > 0)).sum())
        ax.scatter(g["de"], g["self_repair"], s=14, color=st["color"], marker=st["marker"], alpha=0.6, lw=0,
                   label=f"{st['label']}: {n_half}/{len(g)} heads repair > DE/2")
        hi = max(hi, float(np.nanmax(np.abs(np.r_[g["de"].to_numpy(), g["self_repair"].to_numpy(), 1e-6]))))
        lo = min(lo, float(np.nanmin(g["de"])))
    xs = np.linspace(lo - 0.05 * hi, 1.05 * hi, 10)
    ax.plot(xs, xs, color="0.3", lw=0.8, ls="--", label="full repair (SR = DE)")
    ax.plot(xs, xs / 2, color="0.5", lw=0.8, ls=":", label="half (SR = DE/2)")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xlabel(f"direct effect DE [logit]  (mean over {top})")
    ax.set_ylabel("self-repair SR = DE − total effect")
    ax.set_title("(a) self-repair vs direct effect, one point per head", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", frameon=True)

    ax = axes[0, 1]
    for model in models:
        g = heads[heads["model"] == model]
        st = style_of(styles, model)
        r = _per_layer_ratio(g, "self_repair")
        ax.plot(r.index, r.to_numpy(), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, lw=1.5,
                label=st["label"])
    ax.axhline(0, color="0.3", lw=0.6)
    ax.axhline(1, color="0.3", lw=0.6, ls="--")
    ax.set_ylim(-1.2, 2.2)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("relative depth of the ablated head")
    ax.set_ylabel("Σ SR / Σ DE over the layer's heads (DE > 0)")
    ax.set_title("(b) share of the direct effect given back (1: full repair)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0, 2]
    bins = np.linspace(0, 1, 21)
    for model in models:
        g = heads[(heads["model"] == model) & (heads["de"] > 0)]
        st = style_of(styles, model)
        pct = g["norm_pct_de"].dropna()
        if not len(pct):
            continue
        ax.hist(pct, bins=bins, histtype="step", lw=1.6, color=st["color"], ls=st["ls"], density=True,
                label=f"{st['label']}: median {pct.median():.1%}")
        ax.axvline(pct.median(), color=st["color"], ls=st["ls"], lw=1)
    ax.axvline(0.3, color="0.3", lw=1, ls=":", label="study: up to 30 %")
    ax.set_xlabel("final-norm part / DE per token, clipped to [0, 1]\n(mean over each head's top tokens)")
    ax.set_ylabel("density of heads (DE > 0)")
    ax.set_title("(c) share of each head's direct effect repaired by the final norm", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    for ax, (col, label), tag in zip(axes[1], RATIO_PARTS, "def"):
        for model in models:
            g = heads[heads["model"] == model]
            st = style_of(styles, model)
            r = _per_layer_ratio(g, col)
            ax.plot(r.index, r.to_numpy(), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, lw=1.5,
                    label=st["label"])
            if col == "sr_attn" and "sr_post_norm" in g and g["sr_post_norm"].abs().max() > 0:
                r = _per_layer_ratio(g, "sr_post_norm")
                ax.plot(r.index, r.to_numpy(), color=st["color"], ls=":", lw=1.5,
                        label=f"{st['label']}: the layer's own post-norm")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axhline(1, color="0.3", lw=0.6, ls="--")
        ax.set_ylim(-1.2, 2.2)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("relative depth of the ablated head")
        ax.set_ylabel(f"Σ {label} part / Σ DE")
        ax.set_title(f"({tag}) repair by the {label}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    setting = _setting(heads)
    fig.suptitle("Self-repair of single attention heads, ablated one at a time"
                 + (f" ({setting})" if setting else ""), y=1.0, fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)


def plot_self_repair_tokens(tokens: pd.DataFrame, heads: pd.DataFrame, out_pdf, figure_heads: int = 8,
                            styles=None) -> None:
    """Per model (rows): for the ``figure_heads`` heads with the largest direct effect, (a) the
    spread of the per-token ratio SR/DE over their top tokens (0: no repair, 1: full,
    above 1: over-correction) and (b) self-repair vs direct effect per token."""
    sns.set_theme(style="whitegrid", context="paper")
    models = _models(heads)
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 3.9 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.5, 1]})
    for row, model in enumerate(models):
        st = style_of(styles, model)
        hd = heads[heads["model"] == model].nlargest(figure_heads, "de")
        tk = tokens[tokens["model"] == model]
        tk = tk[tk["top"]].merge(hd[["layer", "head"]], on=["layer", "head"])
        tk = tk.assign(ratio=tk["self_repair"] / tk["de"],
                       label=[f"L{lay}H{h}" for lay, h in zip(tk["layer"], tk["head"])])
        order = [f"L{lay}H{h}" for lay, h in zip(hd["layer"], hd["head"])]
        ax = axes[row, 0]
        if len(tk):
            sns.boxplot(data=tk, x="label", y="ratio", order=order, ax=ax, color=st["color"],
                        fliersize=0, width=0.6, boxprops={"alpha": 0.35})
            sns.stripplot(data=tk, x="label", y="ratio", order=order, ax=ax, size=2.5,
                          color=st["color"], alpha=0.6, jitter=0.25)
            lo, hi = np.nanpercentile(tk["ratio"], [2, 98])
            ax.set_ylim(min(lo, -0.2) - 0.1, max(hi, 1.2) + 0.1)
            for i, lab in enumerate(order):
                r = tk.loc[tk["label"] == lab, "ratio"]
                ax.text(i, ax.get_ylim()[1], f"{(r > 1).mean():.0%}>1", ha="center", va="bottom",
                        fontsize=6, color="0.2")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axhline(1, color="0.2", lw=0.8, ls="--")
        ax.set_xlabel("head (largest mean direct effect first)")
        ax.set_ylabel("SR / DE per token")
        ax.set_title(f"{st['label']}: self-repair per token, top tokens of the {len(hd)} strongest heads "
                     "(above: share over-correcting)", fontsize=9, pad=12, color=st["color"])

        ax = axes[row, 1]
        if len(tk):
            sc = ax.scatter(tk["de"], tk["self_repair"], s=6, alpha=0.7, c=tk["sr_norm"] / tk["de"],
                            cmap="plasma", vmin=0, vmax=0.5, lw=0, marker=st["marker"])
            fig.colorbar(sc, ax=ax, label="final-norm part / DE", fraction=0.05, pad=0.02)
            hi = float(np.nanmax(tk["de"]))
            xs = np.linspace(0, hi, 10)
            ax.plot(xs, xs, color="0.2", lw=0.8, ls="--", label="full repair")
            ax.legend(fontsize=7, frameon=False, loc="upper left")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xlabel("direct effect per token [logit]")
        ax.set_ylabel("self-repair per token [logit]")
        ax.set_title(f"{st['label']}: the same tokens (colour: final-norm part / DE)", fontsize=9, color=st["color"])
    setting = _setting(heads)
    fig.suptitle("Self-repair is noisy across prompts: per-token spread" + (f" ({setting})" if setting else ""),
                 y=1.0, fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)
