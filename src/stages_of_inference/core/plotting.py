"""Figures: read tidy tables, draw, save. No model is ever run here."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from .io import atomic_path

# No backend is chosen here (no global state on import): matplotlib picks a non-interactive
# one where there is no display, as in every workflow job.


def model_palette(models):
    models = list(dict.fromkeys(models))
    return dict(zip(models, sns.color_palette("tab10", n_colors=max(len(models), 1))))


def rows_of(df, model: str):
    """The rows of one model (an empty table stays as it is, columns or not)."""
    return df[df["model"] == model] if len(df) else df


def line_with_band(ax, df, y, se, color, label):
    df = df.sort_values("rel_depth")
    ax.plot(df["rel_depth"], df[y], color=color, label=label, lw=1.6, marker="o", ms=2.5)
    if se in df:
        ax.fill_between(df["rel_depth"], df[y] - df[se], df[y] + df[se], color=color, alpha=0.25, lw=0)


# No creation date in the PDF: identical tables give byte-identical figures.
PDF_METADATA = {"CreationDate": None}


def save(fig, out_pdf: str | Path) -> None:
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata=PDF_METADATA)
    plt.close(fig)
