"""Tables derived from the aggregated intervention results."""
from __future__ import annotations

import pandas as pd


def interior(summary: pd.DataFrame) -> pd.Series:
    """Rows whose intervention touches neither the first nor the last block.

    drop L touches block L; swap L touches blocks L and L+1.
    """
    last = summary["n_layers"] - 1
    touched_last = summary["layer"] + (summary["kind"].astype(str) == "swap").astype(int)
    return (summary["layer"] > 0) & (touched_last < last)


def robustness(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model and kind: accuracy retained = accuracy_intervened / accuracy_base,
    averaged over the interior interventions (FIGURES.md, headline table)."""
    df = summary[interior(summary)].copy()
    df["retained"] = df["correct_mean"] / df["correct_base_mean"]
    rows = []
    for (model, kind), g in df.groupby(["model", "kind"], observed=True, sort=True):
        rows.append(
            {
                "model": model,
                "intervention": str(kind),
                "layers_used": len(g),
                "accuracy_base": g["correct_base_mean"].mean(),
                "accuracy_intervened": g["correct_mean"].mean(),
                "retained_mean": g["retained"].mean(),
                "retained_min": g["retained"].min(),
                "retained_max": g["retained"].max(),
            }
        )
    return pd.DataFrame(rows)
