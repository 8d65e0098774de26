"""Per-layer statistics from one hooked forward pass (Figures 4-8 of FIGURES.md).

For every layer ``l`` and every scored token (BOS skipped):

* ``prev5_attn`` (Fig. 4): attention on key positions q-1 ... q-5, the mean of those five
  entries of the pattern, averaged over heads (the authors average the sub-diagonals
  1..5 of the pattern). Defined for queries with five earlier positions (q >= 5), NaN
  before.
* ``attn_norm``, ``mlp_norm`` (Figs. 5, 7): L2 norm of what the attention and the MLP of
  block ``l`` write into the residual stream. For LayerNorm models (GPT-2, Pythia, Phi)
  the component along the all-ones direction, which every LayerNorm removes, is
  excluded: this is the norm in TransformerLens' processed basis
  (``center_writing_weights``) that the authors measured. RMSNorm models are not
  centred (as in TransformerLens). ``attn_norm_raw``/``mlp_norm_raw``: uncentred norms.
* ``lens_kl`` (Fig. 6): logit lens, KL(P_final || P_l) in nats, where P_l applies the
  final norm and the unembedding to the residual stream after block ``l``, taken from
  ``blocks.l.hook_resid_post`` (never from Hugging Face's ``hidden_states``, whose last
  entry is already normalised) and P_final is the model's output distribution.
* ``lens_entropy`` (Fig. 8): entropy of P_l in bits.

The model runs on the core engine (:mod:`stages_of_inference.core.engine`) with eager
attention, hooked at ``blocks.l.attn.hook_pattern``, ``blocks.l.hook_attn_out``,
``blocks.l.hook_mlp_out`` and ``blocks.l.hook_resid_post``. The corpus is streamed batch by
batch; each batch's attention patterns are reduced to the statistic inside the hook, so
no pattern outlives its layer's forward call.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.engine import batched, hook_name
from ..core.metrics import by_row_blocks, entropy_bits, log_probs, rel_depth

N_PREV = 5
TOKEN_COLUMNS = (
    "prev5_attn",
    "attn_norm",
    "mlp_norm",
    "attn_norm_raw",
    "mlp_norm_raw",
    "lens_kl",
    "lens_entropy",
)


# -- the statistics, each a pure function of tensors -------------------------------------


def prev_token_attention(pattern: torch.Tensor, n_prev: int = N_PREV) -> torch.Tensor:
    """Mean attention on the previous ``n_prev`` key positions, per query.

    ``pattern`` is ``[batch, heads, query, key]`` (rows sum to 1). Returns ``[batch,
    query]``: mean over heads and offsets d = 1..n_prev of ``pattern[b, h, q, q - d]``;
    NaN for queries q < n_prev, which have fewer than ``n_prev`` earlier positions.
    """
    b, h, t, _ = pattern.shape
    out = torch.full((b, t), float("nan"), dtype=torch.float32, device=pattern.device)
    if t <= n_prev:
        return out
    p = pattern.float().mean(1)  # [B, Q, K] averaged over heads
    diags = torch.stack(
        [torch.diagonal(p, offset=-d, dim1=-2, dim2=-1)[:, n_prev - d :] for d in range(1, n_prev + 1)]
    )  # [n_prev, B, T - n_prev]: entry q - n_prev of row d is p[q, q - d]
    out[:, n_prev:] = diags.mean(0)
    return out


def write_norm(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """L2 norm over ``d_model``; with ``centre`` the mean over ``d_model`` is removed first."""
    x = x.float()
    if centre:
        x = x - x.mean(-1, keepdim=True)
    return x.norm(dim=-1)


def lens_stats(lens_logits: torch.Tensor, final_lp: torch.Tensor,
               block_bytes: int | None = 1 << 19) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P_final || P_lens) in nats and entropy of P_lens in bits, each ``[...]``.

    On the CPU the rows are taken a few at a time (``block_bytes`` of logits per block,
    :func:`~stages_of_inference.core.metrics.by_row_blocks`, as for the intervention
    metrics): every pass over the vocabulary then reads the CPU cache instead of memory,
    about 3x faster for SmolLM2 on a 2-core CPU, bit for bit the same numbers.
    ``block_bytes=None`` (and any GPU tensor) takes all rows at once.
    """
    if block_bytes is not None and lens_logits.device.type == "cpu" and lens_logits.dim() > 1:
        return by_row_blocks(lambda x, f: lens_stats(x, f, None), (lens_logits, final_lp), (), block_bytes)
    lp = log_probs(lens_logits)
    kl = (final_lp.exp() * (final_lp - lp)).sum(-1).clamp(min=0.0)
    return kl, entropy_bits(lp)


# -- the hooked forward pass ---------------------------------------------------------------

SITES = {  # statistic -> the engine's hook site (core.engine, TransformerLens names)
    "pattern": "attn.hook_pattern",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
}


def hook_names(n_layers: int) -> dict[str, list[str]]:
    """The engine's hook points used, per statistic: ``{key of SITES: [name per layer]}``."""
    return {key: [hook_name(i, site) for i in range(n_layers)] for key, site in SITES.items()}


@torch.no_grad()
def batch_stats(engine, input_ids: torch.Tensor, first: int = 1) -> dict[str, torch.Tensor]:
    """Every statistic for one batch: ``{column: [n_layers, batch, T - first]}`` (CPU).

    ``engine`` is a :class:`~stages_of_inference.core.engine.Engine` built with
    ``attn_implementation="eager"`` (attention patterns are hooked). Attention patterns
    and output norms are reduced inside their hooks; the residual stream after each block
    (``[B, T, d_model]`` per layer, small) is kept until the final distribution is known,
    then put through the logit lens (:meth:`Engine.unembed`: final norm + unembedding)
    one layer at a time.
    """
    n_layers = engine.n_layers
    names = hook_names(n_layers)
    centre = engine.layernorm  # LayerNorms ignore the all-ones direction
    out = {col: [None] * n_layers for col in TOKEN_COLUMNS}
    resid: list[torch.Tensor | None] = [None] * n_layers

    def pattern_hook(layer):
        def hook(pattern):
            out["prev5_attn"][layer] = prev_token_attention(pattern)[:, first:]

        return hook

    def norm_hook(layer, kind):
        def hook(x):
            out[f"{kind}_norm"][layer] = write_norm(x, centre)[:, first:]
            out[f"{kind}_norm_raw"][layer] = write_norm(x, False)[:, first:]

        return hook

    def resid_hook(layer):
        def hook(x):
            resid[layer] = x[:, first:].detach()

        return hook

    hooks = []
    for i in range(n_layers):
        hooks += [
            (names["pattern"][i], pattern_hook(i)),
            (names["attn_out"][i], norm_hook(i, "attn")),
            (names["mlp_out"][i], norm_hook(i, "mlp")),
            (names["resid_post"][i], resid_hook(i)),
        ]
    logits = engine.forward(input_ids, hooks, positions=slice(first, None))
    missing = [col for col, layers in out.items() if col[:4] != "lens" and any(v is None for v in layers)]
    if missing or any(r is None for r in resid):
        raise RuntimeError(
            f"hooks did not fire for {missing or 'resid_post'}; does this architecture "
            f"expose {', '.join(v[0] for v in names.values())}? (eager attention is needed "
            f"for attention patterns)"
        )
    final_lp = log_probs(logits)
    del logits
    for i in range(n_layers):
        lens_logits = engine.unembed(resid[i])
        out["lens_kl"][i], out["lens_entropy"][i] = lens_stats(lens_logits, final_lp)
        resid[i] = None
        del lens_logits
    return {col: torch.stack(layers).float().cpu() for col, layers in out.items()}


def extract_layer_stats(engine, tokens: torch.Tensor, *, batch_size: int = 8, first: int = 1,
                        progress: bool = True):
    """Stream ``tokens`` ``[n_seq, T]`` through ``engine`` (eager attention) in batches
    (:func:`~stages_of_inference.core.engine.batched`, which halves the batch on CUDA
    out-of-memory); tidy per-token ``DataFrame`` with columns ``layer, seq, pos`` and
    :data:`TOKEN_COLUMNS`, rows ordered (layer, seq, pos)."""
    import pandas as pd
    from tqdm.auto import tqdm

    device = engine.device
    n_seq, seq_len = tokens.shape
    n_layers = engine.n_layers

    def run(start: int, stop: int) -> dict[str, np.ndarray]:
        stats = batch_stats(engine, tokens[start:stop].to(device), first)
        return {col: v.numpy() for col, v in stats.items()}  # [L, b, P]

    with tqdm(total=n_seq, desc="layer stats", unit="seq", disable=not progress) as bar:
        parts = batched(n_seq, batch_size, run, progress=bar)
    n_pos = seq_len - first
    cols = {col: np.concatenate([p[col] for p in parts], axis=1).reshape(-1) for col in TOKEN_COLUMNS}
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers, dtype=np.int32), n_seq * n_pos),
            "seq": np.tile(np.repeat(np.arange(n_seq, dtype=np.int32), n_pos), n_layers),
            "pos": np.tile(np.arange(first, seq_len, dtype=np.int32), n_layers * n_seq),
            **cols,
        }
    )


# -- per-layer summary -----------------------------------------------------------------------


def summarise_layer_stats(df, n_layers: int):
    """Per (model, layer): mean and standard error over tokens of every column, the
    attention/MLP norm ratio (ratio of means, delta-method SE), and relative depth."""
    import pandas as pd

    grouped = df.groupby(["model", "layer"], sort=True)
    parts = []
    for col in TOKEN_COLUMNS:  # NaN (prev5 before q = 5) skipped
        agg = grouped[col].agg(["mean", "std", "count"])
        parts.append(pd.DataFrame({f"{col}_mean": agg["mean"],
                                   f"{col}_se": agg["std"] / np.sqrt(agg["count"].clip(lower=1))}))
    summary = pd.concat(parts, axis=1)
    summary["n_tokens"] = grouped.size()
    summary = summary.reset_index()
    ratios = []
    for (model, layer), g in df.groupby(["model", "layer"], sort=True):
        ratios.append(norm_ratio(g["attn_norm"].to_numpy(), g["mlp_norm"].to_numpy()))
    summary["attn_mlp_ratio_mean"] = [r[0] for r in ratios]
    summary["attn_mlp_ratio_se"] = [r[1] for r in ratios]
    summary["n_layers"] = n_layers
    summary["rel_depth"] = rel_depth(summary["layer"], n_layers)
    return summary


def norm_ratio(a: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """mean(a) / mean(m) and its delta-method standard error (paired samples)."""
    a = np.asarray(a, dtype=float)
    m = np.asarray(m, dtype=float)
    n = len(a)
    ma, mm = a.mean(), m.mean()
    ratio = ma / mm
    if n < 2:
        return float(ratio), float("nan")
    cov = np.cov(a, m, ddof=1)
    var = (cov[0, 0] / ma**2 + cov[1, 1] / mm**2 - 2 * cov[0, 1] / (ma * mm)) * ratio**2 / n
    return float(ratio), float(np.sqrt(max(var, 0.0)))


# -- Figure 6's neuron counts and Table 2 ------------------------------------------------------

TABLE2_COLUMNS = ("model", "family", "parameters", "layers", "d_model", "heads", "terms")


def neuron_type_counts(summary, neurons):
    """Figure 6's right axis: per (model, layer) the number of prediction and suppression
    neurons (:func:`~stages_of_inference.core.neurons.type_counts`), with each model's
    layer count taken from its layer-statistics ``summary`` (so layers without any
    classified neuron count 0) and relative depth."""
    import pandas as pd

    from ..core.neurons import type_counts

    n_layers = summary.groupby("model")["n_layers"].first()
    return pd.concat(
        [type_counts(g, int(n_layers[model])) for model, g in neurons.groupby("model", sort=False)],
        ignore_index=True,
    )


def table2_frame(rows):
    """Table 2 from the models' rows (``core.models.model_table_row`` dicts), in order."""
    import pandas as pd

    return pd.DataFrame(list(rows))[list(TABLE2_COLUMNS)]
