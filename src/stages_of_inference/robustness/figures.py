"""Figure 3: layer swap (top) and drop (bottom) against relative depth. Reads the
``interventions_summary`` tables; never runs a model."""
from __future__ import annotations

from ..core.plotting import line_with_band, plt, save, sns, style_of

FIG3_PANELS = (
    ("kl", "KL(P_base ‖ P_intervened) [nats]"),
    ("top1_agree", "Top-1 agreement with baseline"),
    ("entropy_change", "Δ entropy (intervened − base) [bits]"),
)


def plot_fig3(summary, out_pdf, styles=None) -> None:
    """2 rows (swap, drop; only those in the table) x 3 columns (KL, top-1 agreement,
    Δentropy) vs relative depth."""
    sns.set_theme(style="whitegrid", context="paper")
    kinds = [k for k in ("swap", "drop") if k in set(summary["kind"].astype(str))]  # config: kinds
    fig, axes = plt.subplots(len(kinds), 3, figsize=(13, 3.3 * len(kinds)), sharex=True, squeeze=False)
    for row, kind in enumerate(kinds):
        sub = summary[summary["kind"].astype(str) == kind]
        for col, (metric, label) in enumerate(FIG3_PANELS):
            ax = axes[row, col]
            for model, g in sub.groupby("model", sort=False):
                line_with_band(ax, g, f"{metric}_mean", f"{metric}_se", style_of(styles, model))
            ax.set_title(f"{'Adjacent swap' if kind == 'swap' else 'Layer drop'}: {label.split(' [')[0]}", fontsize=10)
            ax.set_ylabel(label, fontsize=9)
            if metric == "top1_agree":
                ax.set_ylim(-0.02, 1.02)
            if metric == "entropy_change":
                ax.axhline(0, color="0.3", lw=0.8, ls="--")
            if row == len(kinds) - 1:
                ax.set_xlabel("Relative depth  (layer / (n_layers − 1))")
            ax.set_xlim(-0.02, 1.02)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.04 * 2 / len(kinds)), title="model")
    title = {("swap", "drop"): "layer swap (top) and layer drop (bottom)",
             ("swap",): "layer swap", ("drop",): "layer drop"}[tuple(kinds)]
    fig.suptitle(f"Figure 3: {title} vs. the unmodified model", y=1.0 + 0.09 * 2 / len(kinds), fontsize=12)
    fig.tight_layout()
    save(fig, out_pdf)


def robustness_markdown(table) -> str:
    """The robustness table as Markdown, with what it measures."""
    return (
        "# Accuracy retained under layer interventions\n\n"
        "Fraction of the unmodified model's next-token accuracy kept when one block is dropped "
        "or two adjacent blocks are swapped, averaged over every intervention that does not "
        "touch the first or the last block (the paper reports 72-95%). n/a: the unmodified "
        "model predicts no token right (a random-weight control), so no accuracy is retained.\n\n"
        + table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".3f", missingval="n/a")
        + "\n"
    )
