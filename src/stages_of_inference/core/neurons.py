"""Prediction and suppression neurons, from the weights alone (FIGURES.md, Figure 6).

Following Gurnee et al., "Universal Neurons" (and their code): for every MLP neuron take
its output weight vector ``w_out`` (a row of ``W_out``) and every column of the
unembedding ``W_U`` of the *folded* model (final-norm weights folded into ``W_U``,
``W_U`` centred over the vocabulary, writing weights centred where the norm allows it),
L2-normalise both, and look at the distribution of the cosines over the vocabulary:

* prediction neuron: raw kurtosis > 10 and skew > 0 (boosts a few tokens);
* suppression neuron: raw kurtosis > 10 and skew < 0 (suppresses a few tokens).

Skew is the population skew E[z^3]; kurtosis the raw fourth standardised moment E[z^4]
(a Gaussian gives 3), with z standardised by the population standard deviation.

Stable interface (Figure 10 imports it):

``folded_weights(engine) -> (W_out [n_layers, d_mlp, d_model], W_U [d_model, d_vocab])``
``vocab_cosines(w_out, W_U) -> [n_neurons, d_vocab]``
``moments(x, dim=-1) -> (skew, kurtosis)``
``classify(skew, kurtosis) -> array of 'prediction' | 'suppression' | 'other'``
``neuron_classes(engine, model) -> DataFrame(model, layer, neuron, skew, kurtosis, type)``
"""
from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

KURTOSIS_THRESHOLD = 10.0
TYPES = ("prediction", "suppression", "other")
COLUMNS = ("model", "layer", "neuron", "skew", "kurtosis", "type")


@torch.no_grad()
def folded_weights(engine) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_out [n_layers, d_mlp, d_model], W_U [d_model, d_vocab])`` of the folded model,
    float32 on the CPU: :meth:`~stages_of_inference.core.engine.Engine.folded_weights`
    (TransformerLens's processed weights: final-norm gain folded into ``W_U``, ``W_U``
    centred; LayerNorm models' writing weights centred; sandwich norms' MLP post-norm gain
    folded into ``W_out``). ``engine`` is an Engine (or a ``transformers`` model)."""
    from .engine import Engine

    if not isinstance(engine, Engine):
        engine = Engine(engine)
    w_out, w_u = engine.folded_weights()
    if w_out.dim() != 3 or w_u.dim() != 2 or w_out.shape[-1] != w_u.shape[0]:
        raise RuntimeError(f"unexpected weight shapes: W_out {tuple(w_out.shape)}, W_U {tuple(w_u.shape)}")
    return w_out, w_u


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def vocab_cosines(w_out: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each output weight vector with each unembedding column.

    ``w_out`` ``[n_neurons, d_model]``, ``w_u`` ``[d_model, d_vocab]`` → ``[n_neurons, d_vocab]``.
    """
    return _unit(w_out, 1) @ _unit(w_u, 0)


def moments(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Population skew and raw (non-excess) kurtosis of ``x`` along ``dim`` (float64)."""
    x = x.double()
    z = x - x.mean(dim, keepdim=True)
    z2 = z * z
    var = z2.mean(dim)
    skew = (z2 * z).mean(dim) / var.pow(1.5)
    kurt = (z2 * z2).mean(dim) / var.pow(2)
    return skew, kurt


def classify(skew, kurtosis, threshold: float = KURTOSIS_THRESHOLD) -> np.ndarray:
    """'prediction' (kurt > threshold, skew > 0), 'suppression' (kurt > threshold,
    skew < 0) or 'other'."""
    skew = np.asarray(skew, dtype=float)
    kurtosis = np.asarray(kurtosis, dtype=float)
    heavy = kurtosis > threshold
    return np.where(heavy & (skew > 0), "prediction", np.where(heavy & (skew < 0), "suppression", "other"))


@torch.no_grad()
def layer_moments(w_out_layer: torch.Tensor, w_u_unit: torch.Tensor, chunk: int = 128, cols: int | None = None,
                  rows: int | None = 16):
    """Skew and kurtosis over the vocabulary for every neuron of one layer.

    The cosines are never held whole (a Gemma 3 layer is 2048 x 262,144 floats, 2 GB): a
    block of ``chunk`` neurons x ``cols`` vocabulary columns comes from one matrix product
    (float32, a few MB: it stays in the CPU's last-level cache), and its raw power sums
    ``sum c, c^2, c^3, c^4`` are accumulated in float64, ``rows`` neurons at a time (in the
    core's own cache), over the vocabulary blocks; the central moments follow from the raw
    ones at the end (float64: with |mean| << std, as for cosines, no cancellation that
    matters). One pass over the vocabulary, nothing vocabulary-sized written to memory.
    ``cols=None``: 4096 on the CPU, the whole vocabulary on a GPU. Same classes as the
    unblocked :func:`moments` (the sums are taken in another order: ~1e-12 differences).
    """
    n, vocab = w_out_layer.shape[0], w_u_unit.shape[1]
    if cols is None:
        cols = vocab if w_out_layer.device.type == "cuda" else 4096
    if rows is None:  # the whole block at once
        rows = chunk
    w = _unit(w_out_layer, 1)
    sums = torch.zeros(4, n, dtype=torch.float64, device=w.device)
    for start in range(0, n, chunk):
        w_chunk = w[start : start + chunk]
        for v0 in range(0, vocab, cols):
            cos = w_chunk @ w_u_unit[:, v0 : v0 + cols]
            for r in range(0, cos.shape[0], rows):
                x = cos[r : r + rows].double()
                x2 = x * x
                here = slice(start + r, start + r + x.shape[0])
                sums[0, here] += x.sum(1)
                sums[1, here] += x2.sum(1)
                sums[2, here] += (x2 * x).sum(1)
                sums[3, here] += (x2 * x2).sum(1)
    m1, m2, m3, m4 = sums / vocab
    var = m2 - m1 * m1
    third = m3 - 3 * m1 * m2 + 2 * m1**3
    fourth = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    return (third / var.pow(1.5)).cpu().numpy(), (fourth / var.pow(2)).cpu().numpy()


def layer_frame(model: str, layer: int, n: int, **columns) -> "pd.DataFrame":  # noqa: F821
    """One layer's rows of a per-neuron table: model, layer, neuron, then ``columns``."""
    import pandas as pd

    return pd.DataFrame(
        {
            "model": model,
            "layer": np.full(n, layer, dtype=np.int32),
            "neuron": np.arange(n, dtype=np.int32),
            **columns,
        }
    )


def neuron_classes(engine, model: str, device: str = "cpu") -> "pd.DataFrame":  # noqa: F821
    """One row per MLP neuron: ``model, layer, neuron, skew, kurtosis, type``.

    ``device``: where the cosines are computed (a GPU for billion-parameter models).
    """
    import pandas as pd

    w_out, w_u = folded_weights(engine)
    w_u_unit = _unit(w_u.to(device), 0)
    frames = []
    for layer in range(w_out.shape[0]):
        skew, kurt = layer_moments(w_out[layer].to(device), w_u_unit)
        n = len(skew)
        frames.append(layer_frame(model, layer, n, skew=skew, kurtosis=kurt, type=classify(skew, kurt)))
        kinds, counts = np.unique(frames[-1]["type"], return_counts=True)
        log.info("%s layer %d: %s", model, layer, {str(k): int(c) for k, c in zip(kinds, counts)})
    return pd.concat(frames, ignore_index=True)


def type_counts(neurons: "pd.DataFrame", n_layers: int | None = None) -> "pd.DataFrame":  # noqa: F821
    """Per (model, layer): number of prediction and suppression neurons, with relative
    depth; layers with none of a type get 0."""
    import pandas as pd

    from .metrics import rel_depth

    rows = []
    for model, g in neurons.groupby("model", sort=False):
        layers = int(n_layers or g["layer"].max() + 1)
        counts = pd.crosstab(g["layer"], g["type"]).reindex(index=range(layers), columns=list(TYPES), fill_value=0)
        counts = counts.rename_axis(index="layer", columns=None).reset_index()
        counts.insert(0, "model", model)
        counts["n_layers"] = layers
        counts["rel_depth"] = rel_depth(counts["layer"], layers)
        rows.append(counts)
    return pd.concat(rows, ignore_index=True)
