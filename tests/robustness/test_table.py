"""The accuracy-retained table (Figure 3's headline numbers) by hand."""
import math

import pandas as pd

from stages_of_inference.robustness.compute import robustness
from stages_of_inference.robustness.figures import robustness_markdown


def summary(model, base, correct, n_layers=5):
    rows = [dict(model=model, kind="drop", layer=L, n_layers=n_layers, correct_base_mean=base, correct_mean=c)
            for L, c in enumerate(correct)]
    return pd.DataFrame(rows)


def test_retained_averages_interior_drops_by_hand():
    # layers 0 and 4 touch the first/last block: left out
    t = robustness(summary("m", 0.5, [0.0, 0.4, 0.3, 0.5, 0.0]))
    row = t.iloc[0]
    assert row.layers_used == 3
    assert math.isclose(row.retained_mean, (0.8 + 0.6 + 1.0) / 3)
    assert (row.retained_min, row.retained_max) == (0.6, 1.0)


def test_a_model_that_predicts_nothing_retains_nothing_defined():
    """A random-weight control has base accuracy 0: retained is n/a, not inf or a 0/0 NaN
    printed as 'nan'."""
    t = robustness(pd.concat([summary("control", 0.0, [0.0, 0.1, 0.0, 0.0, 0.0]), summary("m", 0.5, [0.5] * 5)]))
    control = t[t.model == "control"].iloc[0]
    assert math.isnan(control.retained_mean) and math.isnan(control.retained_max)
    md = robustness_markdown(t)
    assert "inf" not in md and "nan" not in md
    assert md.count("n/a") == 3 + 1  # three cells + the sentence that explains it
