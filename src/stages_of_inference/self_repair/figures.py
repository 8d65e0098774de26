"""Self-repair figures: read the tidy tables (compute.py), draw. No model is run here."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.plotting import plt, save, sns

PARTS = (("self_repair", "total", "black"), ("sr_norm", "final norm", "tab:orange"),
         ("sr_attn", "later attention", "tab:red"), ("sr_mlp", "MLPs", "tab:blue"))


def _models(heads: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(heads["model"]))


def plot_self_repair(heads: pd.DataFrame, out_pdf, top_fraction: float | None = None, styles=None) -> None:
    """Per model (rows): (a) self-repair vs direct effect per head (means over each head's
    top tokens), coloured by relative depth; (b) the fraction of the direct effect given
    back, per part, against relative depth (points: heads; lines: per-layer medians);
    (c) the share of each head's direct effect repaired by the final norm."""
    sns.set_theme(style="whitegrid", context="paper")
    models = _models(heads)
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.9 * len(models)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    top = f"top {top_fraction:.0%} tokens by DE" if top_fraction else "top tokens by DE"
    for row, model in enumerate(models):
        g = heads[heads["model"] == model]
        ax = axes[row, 0]
        sc = ax.scatter(g["de"], g["self_repair"], c=g["rel_depth"], cmap=cmap, vmin=0, vmax=1,
                        s=18, alpha=0.85, edgecolor="0.3", linewidth=0.3)
        hi = float(np.nanmax(np.abs(np.r_[g["de"].to_numpy(), g["self_repair"].to_numpy(), 1e-6])))
        lim = (min(0.0, float(np.nanmin(g["de"]))) - 0.05 * hi, 1.05 * hi)
        xs = np.linspace(*lim, 10)
        ax.plot(xs, xs, color="0.3", lw=0.8, ls="--", label="full repair (SR = DE)")
        ax.plot(xs, xs / 2, color="0.5", lw=0.8, ls=":", label="half (SR = DE/2)")
        ax.axhline(0, color="0.3", lw=0.6)
        n_half = int(((g["self_repair"] > g["de"] / 2) & (g["de"] > 0)).sum())
        ax.set_title(f"{model}: self-repair vs direct effect ({len(g)} heads; "
                     f"{n_half} repair > half)", fontsize=9)
        ax.set_xlabel(f"direct effect DE [logit]  (mean over {top})")
        ax.set_ylabel("self-repair SR = DE − total effect")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
        fig.colorbar(sc, ax=ax, label="relative depth", fraction=0.05, pad=0.02)

        ax = axes[row, 1]
        ok = g[g["de"] > 0]
        strong = ok[ok["de"] >= ok["de"].median()] if len(ok) else ok
        by_layer = ok.groupby("rel_depth")
        for col, label, color in PARTS:
            # points: heads with at least the median DE (small DEs make ratios explode);
            # lines: per layer, the part summed over heads / DE summed over heads
            ax.scatter(strong["rel_depth"], strong[col] / strong["de"], s=7, color=color, alpha=0.35, lw=0)
            ratio = by_layer[col].sum() / by_layer["de"].sum()
            ax.plot(ratio.index, ratio.to_numpy(), color=color, lw=1.5, label=label)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axhline(1, color="0.3", lw=0.6, ls="--")
        ax.set_ylim(-1.2, 2.2)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("relative depth of the ablated head")
        ax.set_ylabel("part / DE")
        ax.set_title("fraction of DE given back (lines: per layer, Σ part / Σ DE;\n"
                     "points: heads with DE ≥ median)", fontsize=9)
        ax.legend(fontsize=7, ncol=2, frameon=False, loc="upper left")

        ax = axes[row, 2]
        pct = ok["norm_pct_de"].dropna()
        ax.hist(pct, bins=np.linspace(0, 1, 21), color="tab:orange", alpha=0.8, edgecolor="white")
        if len(pct):
            ax.axvline(pct.median(), color="0.2", lw=1.2, label=f"median {pct.median():.1%}")
        ax.axvline(0.3, color="tab:red", lw=1, ls="--", label="study: up to 30 %")
        unclipped = strong["norm_frac_de"].median() if len(strong) else float("nan")
        ax.plot([], [], " ", label=f"unclipped mean SR_norm / mean DE,\nheads with DE ≥ median: median {unclipped:.1%}")
        ax.set_xlabel("final-norm repair / DE per token, clipped to [0, 1], mean over top tokens")
        ax.set_ylabel("heads")
        ax.set_title("share of the direct effect repaired by the final norm", fontsize=9)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)
        ax.legend(fontsize=7, frameon=True, loc="upper right")
    fig.suptitle("Self-repair of single attention heads (ablated one at a time)", y=1.0, fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)


def plot_self_repair_tokens(tokens: pd.DataFrame, heads: pd.DataFrame, out_pdf, figure_heads: int = 8, styles=None) -> None:
    """Per model (rows): for the ``figure_heads`` heads with the largest direct effect, (a) the
    spread of the per-token ratio SR/DE over their top tokens (0: no repair, 1: full,
    above 1: over-correction) and (b) self-repair vs direct effect per token."""
    sns.set_theme(style="whitegrid", context="paper")
    models = _models(heads)
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 3.9 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.5, 1]})
    for row, model in enumerate(models):
        hd = heads[heads["model"] == model].nlargest(figure_heads, "de")
        tk = tokens[tokens["model"] == model]
        tk = tk[tk["top"]].merge(hd[["layer", "head"]], on=["layer", "head"])
        tk = tk.assign(ratio=tk["self_repair"] / tk["de"],
                       label=[f"L{lay}H{h}" for lay, h in zip(tk["layer"], tk["head"])])
        order = [f"L{lay}H{h}" for lay, h in zip(hd["layer"], hd["head"])]
        ax = axes[row, 0]
        if len(tk):
            sns.boxplot(data=tk, x="label", y="ratio", order=order, ax=ax, color="tab:blue",
                        fliersize=0, width=0.6, boxprops={"alpha": 0.35})
            sns.stripplot(data=tk, x="label", y="ratio", order=order, ax=ax, size=2.5,
                          color="tab:blue", alpha=0.6, jitter=0.25)
            lo, hi = np.nanpercentile(tk["ratio"], [2, 98])
            ax.set_ylim(min(lo, -0.2) - 0.1, max(hi, 1.2) + 0.1)
            for i, lab in enumerate(order):
                r = tk.loc[tk["label"] == lab, "ratio"]
                ax.text(i, ax.get_ylim()[1], f"{(r > 1).mean():.0%}>1", ha="center", va="bottom",
                        fontsize=6, color="tab:red")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axhline(1, color="tab:red", lw=0.8, ls="--")
        ax.set_xlabel("head (largest mean direct effect first)")
        ax.set_ylabel("SR / DE per token")
        ax.set_title(f"{model}: self-repair per token, top tokens of the {len(hd)} strongest heads "
                     "(red: share over-correcting)", fontsize=9, pad=12)

        ax = axes[row, 1]
        if len(tk):
            sc = ax.scatter(tk["de"], tk["self_repair"], s=6, alpha=0.7, c=tk["sr_norm"] / tk["de"],
                            cmap="plasma", vmin=0, vmax=0.5, lw=0)
            fig.colorbar(sc, ax=ax, label="final-norm part / DE", fraction=0.05, pad=0.02)
            hi = float(np.nanmax(tk["de"]))
            xs = np.linspace(0, hi, 10)
            ax.plot(xs, xs, color="tab:red", lw=0.8, ls="--", label="full repair")
            ax.legend(fontsize=7, frameon=False, loc="upper left")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xlabel("direct effect per token [logit]")
        ax.set_ylabel("self-repair per token [logit]")
        ax.set_title("same tokens (colour: final-norm part / DE)", fontsize=9)
    fig.suptitle("Self-repair is noisy across prompts: per-token spread", y=1.0, fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)
