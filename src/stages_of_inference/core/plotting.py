"""Figures: read tidy tables, draw, save. No model is ever run here.

Every figure compares the configured models, each drawn the same way in every figure
(:func:`model_styles`, computed once from the config and passed to every figure rule):
trained models get fixed colours in config order, random-weight controls are grey and
dashed, labelled as controls.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import seaborn as sns  # noqa: F401 - re-exported: the figure modules import sns from here

from .io import atomic_path

# No backend is chosen here (no global state on import): matplotlib picks a non-interactive
# one where there is no display, as in every workflow job.

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
            "#bcbd22"]  # tab10 without its grey, which marks controls
_CONTROL_GREYS = ["#7f7f7f", "#a6a6a6", "#555555"]


def model_styles(models: Mapping[str, Mapping]) -> dict[str, dict]:
    """``{model: {color, ls, marker, label, control}}`` from the config's ``models`` section
    (name -> spec), in config order: the same for every figure of a run. A random-weight
    model is drawn as a control next to trained models; where every model is random (the
    tests' tiny models) each gets a colour of its own."""
    styles, trained, controls = {}, 0, 0
    any_trained = any((spec or {}).get("source") != "random" for spec in models.values())
    for name, spec in models.items():
        control = any_trained and (spec or {}).get("source") == "random"
        if control:
            colour = _CONTROL_GREYS[controls % len(_CONTROL_GREYS)]
            controls += 1
        else:
            colour = _COLOURS[trained % len(_COLOURS)]
            trained += 1
        styles[name] = {"color": colour, "ls": "--" if control else "-", "marker": "s" if control else "o",
                        "label": f"{name} (random weights)" if control else name, "control": control}
    return styles


def style_of(styles: Mapping[str, Mapping] | None, model: str) -> dict:
    """A model's style; a model missing from ``styles`` gets one from its name alone."""
    if styles and model in styles:
        return dict(styles[model])
    return model_styles({model: {}})[model]


def model_palette(models, styles: Mapping[str, Mapping] | None = None) -> dict[str, str]:
    """``{model: colour}`` for the models in a table (fixed by ``styles`` when given)."""
    models = list(dict.fromkeys(models))
    if styles:
        return {m: style_of(styles, m)["color"] for m in models}
    fallback = model_styles({m: {} for m in models})
    return {m: fallback[m]["color"] for m in models}


def rows_of(df, model: str):
    """The rows of one model (an empty table stays as it is, columns or not)."""
    return df[df["model"] == model] if len(df) else df


def line_with_band(ax, df, y, se, style, label=None):
    """A model's line (mean) with a band of ± one standard error, against relative depth.
    ``style``: a :func:`model_styles` entry, or a colour (then ``label`` names the line)."""
    if isinstance(style, str):
        style = {"color": style, "ls": "-", "marker": "o", "label": label}
    df = df.sort_values("rel_depth")
    ax.plot(df["rel_depth"], df[y], color=style["color"], ls=style["ls"], label=label or style["label"], lw=1.6,
            marker=style["marker"], ms=2.5)
    if se in df:
        ax.fill_between(df["rel_depth"], df[y] - df[se], df[y] + df[se], color=style["color"], alpha=0.2, lw=0)


# No creation date in the PDF: identical tables give byte-identical figures.
PDF_METADATA = {"CreationDate": None}


def save(fig, out_pdf: str | Path) -> None:
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata=PDF_METADATA)
    plt.close(fig)
