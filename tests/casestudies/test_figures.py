"""Figures 9 and 10 from tidy tables: every model in its own style, readable with three
models (one of them a random-weight control), empty tables drawn as messages."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from stages_of_inference.casestudies.figures import draw_fig9, draw_fig10, layer_profile, plot_fig9, plot_fig10
from stages_of_inference.casestudies.ing import PROBE_COLUMNS, VOCAB_COLUMNS
from stages_of_inference.casestudies.subjoiner import EXAMPLE_COLUMNS, SCORE_COLUMNS, score_table
from stages_of_inference.core.plotting import model_styles

MODELS = {"alpha": {"source": "embedded"}, "beta": {"source": "embedded"},
          "noise": {"source": "random", "arch": "smollm2"}}
SHAPES = {"alpha": (6, 3), "beta": (4, 2), "noise": (6, 3)}


@pytest.fixture
def styles():
    return model_styles(MODELS)


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for model, (n_layers, n_heads) in SHAPES.items():
        shape = (n_layers, n_heads)
        word, control = rng.uniform(0, 1, shape), rng.uniform(0, 0.3, shape)
        frames.append(score_table({"score": word - control, "score_se": np.full(shape, 0.02),
                                   "word_attention": word, "control_attention": control}, model, 20, 20))
    return pd.concat(frames, ignore_index=True)


def _examples(scores):
    rows = []
    for model in SHAPES:
        top = scores[(scores["model"] == model) & (scores["rank"] == 1)].iloc[0]
        for kind, k in (("multi", 2), ("single", 1)):
            for example in range(2):
                for position in range(-5, 1):
                    rows.append({"model": model, "layer": top["layer"], "head": top["head"], "kind": kind,
                                 "example": example, "prompt_id": example, "word": "word", "n_subtokens": k,
                                 "position": position, "token": f"t{position}", "attention": 0.1,
                                 "in_word": position > -k, "is_query": position == 0})
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def _same_colour(a, b):
    return np.allclose(mcolors.to_rgba(a), mcolors.to_rgba(b))


def test_layer_profile_is_the_best_head_per_layer():
    scores = _scores()
    profile = layer_profile(scores)
    for (model, layer), g in scores.groupby(["model", "layer"]):
        row = profile[(profile["model"] == model) & (profile["layer"] == layer)].iloc[0]
        assert row["score"] == g["score"].max() and row["head"] == g.loc[g["score"].idxmax(), "head"]
    assert len(profile) == sum(n for n, _ in SHAPES.values())


def test_fig9_styles_and_shared_scale(styles, tmp_path):
    scores = _scores()
    fig = draw_fig9(list(SHAPES), scores, _examples(scores), styles)
    try:
        profile_ax = next(ax for ax in fig.axes if ax.get_title().startswith("(a)"))
        lines = {line.get_label(): line for line in profile_ax.get_lines() if not line.get_label().startswith("_")}
        for model in SHAPES:
            st = styles[model]
            line = lines[st["label"]]
            assert _same_colour(line.get_color(), st["color"])
            assert line.get_linestyle() == {"-": "-", "--": "--"}[st["ls"]]
            # relative depth: every model spans 0..1
            assert line.get_xdata()[0] == 0 and line.get_xdata()[-1] == pytest.approx(1)
        assert lines["noise (random weights)"].get_linestyle() == "--"
        # per-model score maps: titles in the model's colour, one colour scale for all models
        maps = [ax for ax in fig.axes if "sub-joiner score per head" in ax.get_title()]
        assert len(maps) == 3
        for ax, model in zip(maps, SHAPES):
            assert ax.get_title().startswith(styles[model]["label"])
            assert _same_colour(ax.title.get_color(), styles[model]["color"])
        limits = {ax.get_images()[0].get_clim() for ax in maps}
        assert len(limits) == 1 and limits.pop()[1] == pytest.approx(np.abs(scores["score"]).max())
    finally:
        plt.close(fig)
    plot_fig9(list(SHAPES), scores, _examples(scores), tmp_path / "fig9.pdf", styles)
    assert (tmp_path / "fig9.pdf").stat().st_size > 10_000


def _probes(model, own, n=4):
    rows = []
    for order in range(1, n + 1):
        role = "prediction" if order % 2 else "suppression"
        rows.append({"model": model, "probe": "single", "n_neurons": 1, "order": order, "layer": order, "neuron": 0,
                     "role": role, "type": role, "test_accuracy": 0.5 + 0.05 * order, "n_test": 60})
        rows.append({"model": model, "probe": "ensemble", "n_neurons": order, "order": order,
                     "test_accuracy": 0.6 + 0.05 * order, "n_test": 60})
    rows.append({"model": model, "probe": "model_top1", "n_neurons": 0, "test_accuracy": own, "n_test": 60})
    return pd.DataFrame(rows).reindex(columns=PROBE_COLUMNS)


def _vocab(model):
    rng = np.random.default_rng(0)
    frames = []
    for role in ("prediction", "suppression"):
        n = 500
        frames.append(pd.DataFrame({"model": model, "role": role, "layer": 2, "neuron": 7, "token_id": np.arange(n),
                                    "token": "x", "is_ing": np.arange(n) < 40, "cosine": rng.normal(size=n)}))
    return pd.concat(frames, ignore_index=True)[VOCAB_COLUMNS]


def test_fig10_styles(styles, tmp_path):
    probes = pd.concat([_probes("alpha", 0.7), _probes("beta", 0.55)], ignore_index=True)
    vocab = pd.concat([_vocab("alpha"), _vocab("beta")], ignore_index=True)
    fig = draw_fig10(list(SHAPES), probes, vocab, styles)
    try:
        ax = next(ax for ax in fig.axes if ax.get_title().startswith("(a)"))
        lines = {line.get_label(): line for line in ax.get_lines()}
        for model, own in (("alpha", 0.7), ("beta", 0.55)):
            st = styles[model]
            ens = next(line for label, line in lines.items() if label.startswith(f"{st['label']}: ensemble"))
            assert _same_colour(ens.get_color(), st["color"])
            np.testing.assert_allclose(ens.get_ydata(), 0.6 + 0.05 * np.arange(1, 5))
            top1 = next(line for label, line in lines.items() if label.startswith(f"{st['label']}: the model's own"))
            assert _same_colour(top1.get_color(), st["color"]) and top1.get_ydata()[0] == own
        # a model without probes is named in the legend, not dropped silently
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("noise (random weights): no probes") for t in legend)
        hists = [a for a in fig.axes if a.get_title().startswith("(b)")]
        assert len(hists) == 4  # two models with a vocabulary table, two roles each
        for a in hists:
            model = "alpha" if "alpha" in a.get_title() else "beta"
            assert _same_colour(a.title.get_color(), styles[model]["color"])
    finally:
        plt.close(fig)
    plot_fig10(list(SHAPES), probes, vocab, tmp_path / "fig10.pdf", styles)
    assert (tmp_path / "fig10.pdf").stat().st_size > 10_000


def test_figures_with_empty_tables(styles, tmp_path):
    plot_fig9(["alpha"], pd.DataFrame(columns=SCORE_COLUMNS), pd.DataFrame(columns=EXAMPLE_COLUMNS),
              tmp_path / "fig9.pdf", styles)
    plot_fig10(["alpha"], pd.DataFrame(columns=PROBE_COLUMNS), pd.DataFrame(columns=VOCAB_COLUMNS),
               tmp_path / "fig10.pdf", styles)
    assert (tmp_path / "fig9.pdf").exists() and (tmp_path / "fig10.pdf").exists()
