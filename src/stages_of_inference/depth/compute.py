"""Per-layer statistics from one hooked forward pass (Figures 4-8 of FIGURES.md).

**Points and tokens.** Every block ``l = 0 .. n_layers - 1`` is a point: the residual stream
after it (``blocks.l.hook_resid_post``, never Hugging Face's ``hidden_states``, whose last
entry is already normalised). So is the embedding, ``layer = -1`` in every table: the
residual stream entering block 0 (``blocks.0.hook_resid_pre``; Gemma's embedding is already
scaled by sqrt(d_model) there); only the logit-lens columns have values there. Every
token of a sequence from position ``first`` on is scored (``first = 1`` skips BOS).

**Two definitions side by side.** For Figure 4 and for the logit lens (Figures 6 and 8) the
tables hold the workflow's definition (plain column names) and that of the authors'
notebooks (``*_authors``), which follow those notebooks in definition, positions and
aggregation:

* ``prev5_attn_authors`` (Fig. 4), the authors' ``attention_prev5.ipynb``: ``np.nanmean``
  of every entry of the sub-diagonals 1..5 of every head's attention pattern, per document,
  then the mean over documents. Per token (query ``q``) the table holds the mean of
  ``pattern[h, q, q - d]`` over the heads and the ``min(q, 5)`` offsets ``d`` that exist,
  and ``prev5_keys = min(q, 5)``, the query's weight in its document's mean: queries 1-4,
  whose window reaches the first token (BOS, where attention piles up), count too.
  ``prev5_attn``: the same mean for queries with five earlier positions (``q >= 5``) only,
  NaN before; tokens pooled. On a query with ``q >= 5`` the two agree.
* The logit lens. With the final norm as ``g ⊙ c(x) / s(x) + b``
  (:class:`~stages_of_inference.core.norms.NormReadout`: ``c`` centres for LayerNorm,
  ``s`` is the per-token scale, ``g`` the gain, ``1 + w`` for Gemma) and
  ``A_l = W_U (g ⊙ c(x_l))``, ONE unembedding per point and batch serves both lenses:

  - ``lens_kl``, ``lens_entropy``: ``A_l / s(x_l) + W_U b + b_U`` (then the model's final
    logit soft-capping, if any), i.e. :meth:`Engine.unembed` of ``x_l``: the final norm
    with the point's own statistics, then the unembedding. This is the logit lens of
    nostalgebraist's post that the paper cites (and that TransformerLens 2.18 adopted,
    PR #1077). Every scored position.
  - ``lens_kl_authors``, ``lens_entropy_authors``: ``A_l / s(x_final)``, the lens of the
    authors' ``entropy_calculation.ipynb``: ``cache.accumulated_resid(apply_ln=True) @
    W_U`` with TransformerLens 1.18 and the model loaded with ``fold_ln=True``. It divides
    every point's residual (centred, on LayerNorm models) by the FINAL layer's cached norm
    scale (TransformerLens issue #1076), and ``@ W_U`` leaves out ``b_U`` (where
    ``fold_ln`` puts the final LayerNorm's bias) and soft-capping, as here. The authors ran
    it on LayerNorm models (GPT-2, Pythia, Phi); on RMSNorm models TransformerLens 1.18's
    ``apply_ln`` left the residual unscaled, and TransformerLens 2.3-2.17 divided it by the
    final scale, the formula used here for every model. The notebook's points are the
    embedding and every block (x axis ``point / n_layers``: the ``rel_depth_authors`` of the
    summary), it drops the first and the LAST position of each text (``[:, :, 1:-1]``:
    these columns are NaN at the last position), and averages per document, then over
    documents.

  KL(P_final || P_point) in nats, P_final the model's output distribution (the last
  block's point, where both lenses read ``s(x_final)``); entropy in bits.

**Which definition comes first.** A reader of the paper expects the definition the paper
states, and, where it states none, the one its numbers come from:

* Figure 4: the paper says only "the mean attention of the previous five tokens", so its
  numbers are those of ``attention_prev5.ipynb``: the authors' convention is Figure 4's
  first panel; ``prev5_attn`` (every query averaged over the same five keys) its second.
* Figures 6 and 8: the paper says it uses "the logit lens technique" of nostalgebraist's
  post, the distribution of the next token "at the end of every layer": each point's own
  norm, ``lens_*``, is the first panel (Figure 8) and the solid line (Figure 6). The
  authors' lens, which their code computed, is second: it shrinks every early residual by
  the final, much larger, norm scale, so early distributions look nearly uniform (high
  entropy) because of the scale, not because of the model's uncertainty.

**Figures 5 and 7.** ``attn_norm``, ``mlp_norm``: L2 norm of what the attention and the
MLP of block ``l`` ADD to the residual stream (the engine's ``hook_attn_out`` and
``hook_mlp_out``: after Gemma's post-attention and post-feedforward norms). For LayerNorm
models (GPT-2, Pythia, Phi) the component along the all-ones direction, which every
LayerNorm removes, is excluded: the norm in TransformerLens' processed basis
(``center_writing_weights``) that the authors measured. RMSNorm models are not centred (as
in TransformerLens). ``attn_norm_raw``/``mlp_norm_raw``: uncentred norms.

The model runs on the core engine (:mod:`stages_of_inference.core.engine`) with eager
attention, hooked at ``blocks.l.attn.hook_pattern``, ``blocks.l.hook_attn_out``,
``blocks.l.hook_mlp_out``, ``blocks.l.hook_resid_post`` and ``blocks.0.hook_resid_pre``.
The corpus is streamed batch by batch; each batch's attention patterns are reduced to the
statistic inside the hook, so no pattern outlives its layer's forward call. The lens reads
the points' residuals (``[B, T, d_model]`` each, small) after the pass: rows in chunks of
at most ``LENS_CHUNK_BYTES`` of logits, one unembedding (a matrix product) per point and
chunk, and every vocabulary-sized reduction (both lenses' log-softmax, entropy, KL) a few
rows at a time (:func:`~stages_of_inference.core.metrics.by_row_blocks`) so that it reads
the CPU's cache, not memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.engine import batched, hook_name
from ..core.metrics import LN2, by_row_blocks, rel_depth

N_PREV = 5
EMBEDDING = -1  # the layer index of the embedding point in every table
POOLED_COLUMNS = (  # mean and SE over tokens
    "prev5_attn",
    "attn_norm",
    "mlp_norm",
    "attn_norm_raw",
    "mlp_norm_raw",
    "lens_kl",
    "lens_entropy",
)
DOCUMENT_COLUMNS = (  # the authors' aggregation: per document, then mean and SE over documents
    "prev5_attn_authors",
    "lens_kl_authors",
    "lens_entropy_authors",
)
TOKEN_COLUMNS = POOLED_COLUMNS + DOCUMENT_COLUMNS
LENS_COLUMNS = ("lens_kl", "lens_entropy", "lens_kl_authors", "lens_entropy_authors")
LENS_CHUNK_BYTES = 1 << 27  # rows per unembedding: at most 128 MiB of float32 logits
BLOCK_BYTES = 1 << 19  # rows per vocabulary-sized reduction on the CPU (core.metrics.by_row_blocks)


# -- the statistics, each a pure function of tensors -------------------------------------


def prev_window_attention(pattern: torch.Tensor, n_prev: int = N_PREV) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query ``q``: mean attention on the ``min(q, n_prev)`` previous positions.

    ``pattern`` is ``[batch, heads, query, key]``. Returns ``(mean [batch, query] float32,
    keys [query] int64)``: the mean of ``pattern[b, h, q, q - d]`` over heads and
    ``d = 1 .. min(q, n_prev)``, NaN at ``q = 0`` (no earlier position), and ``keys =
    min(q, n_prev)``, the number of offsets. ``keys``-weighted means of ``mean`` over a
    document's queries are the mean of every entry of the sub-diagonals 1..n_prev of every
    head's pattern (the authors' ``attention_prev5.ipynb``).
    """
    b, _, t, _ = pattern.shape
    p = pattern.float().mean(1)  # [B, Q, K] averaged over heads (every query has every head)
    total = torch.zeros(b, t, dtype=torch.float32, device=pattern.device)
    for d in range(1, min(n_prev, t - 1) + 1):
        total[:, d:] += torch.diagonal(p, offset=-d, dim1=-2, dim2=-1)  # entry q - d is p[q, q - d]
    keys = torch.arange(t, device=pattern.device).clamp(max=n_prev)
    return total / keys, keys  # 0 / 0 = NaN at q = 0


def prev_token_attention(pattern: torch.Tensor, n_prev: int = N_PREV) -> torch.Tensor:
    """Mean attention on the previous ``n_prev`` key positions, per query: ``[batch,
    query]``, the mean over heads and offsets d = 1..n_prev of ``pattern[b, h, q, q - d]``;
    NaN for queries q < n_prev, which have fewer than ``n_prev`` earlier positions."""
    mean, keys = prev_window_attention(pattern, n_prev)
    return torch.where(keys == n_prev, mean, torch.full_like(mean, float("nan")))


def write_norm(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """L2 norm over ``d_model``; with ``centre`` the mean over ``d_model`` is removed first."""
    x = x.float()
    if centre:
        x = x - x.mean(-1, keepdim=True)
    return x.norm(dim=-1)


def distribution_stats(logits: torch.Tensor, p_ref: torch.Tensor, neg_h_ref: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(KL(P_ref || P) in nats, H(P) in bits)`` per row, P = softmax(``logits``).

    ``p_ref``: the reference probabilities (same shape as ``logits``), ``neg_h_ref``: their
    ``sum p log p`` in nats (per row). One exponential per logit:
    ``d = z - max z``, ``S = sum exp d``; ``H = log S - sum exp(d) d / S`` and
    ``sum p_ref log P = sum p_ref d - log S``.
    """
    d = logits.float()
    d = d - d.amax(-1, keepdim=True)
    e = d.exp()
    s = e.sum(-1)
    log_s = s.log()
    entropy_nats = log_s - (e * d).sum(-1) / s
    cross = (p_ref * d).sum(-1) - log_s
    return (neg_h_ref - cross).clamp(min=0.0), entropy_nats / LN2


def lens_stats(lens_logits: torch.Tensor, final_lp: torch.Tensor,
               block_bytes: int | None = BLOCK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P_final || P_lens) in nats and entropy of P_lens in bits, each ``[...]``, from
    ``lens_logits`` and the final log-probabilities ``final_lp``.

    On the CPU the rows are taken a few at a time (``block_bytes`` of logits per block,
    :func:`~stages_of_inference.core.metrics.by_row_blocks`): every pass over the vocabulary
    then reads the CPU cache instead of memory. Bit for bit the numbers of
    ``block_bytes=None`` (and any GPU tensor), which takes all rows at once.
    """
    if block_bytes is not None and lens_logits.device.type == "cpu" and lens_logits.dim() > 1:
        return by_row_blocks(lambda x, f: lens_stats(x, f, None), (lens_logits, final_lp), (), block_bytes)
    p = final_lp.float().exp()
    return distribution_stats(lens_logits, p, (p * final_lp.float()).sum(-1))


# -- the two logit lenses from one unembedding ------------------------------------------------


@dataclass
class Lenses:
    """Both logit lenses of one model from one unembedding ``A = W_U (g ⊙ c(x))``
    (module docstring): ``ours(A, s(x))`` and ``authors(A, s(x_final))``."""

    readout: object  # core.norms.NormReadout of the final norm
    w_u: torch.Tensor  # [V, d_model] the unembedding rows (lm_head weight)
    offset: torch.Tensor | None  # [V] W_U b + b_U (ours only); None if zero
    softcap: float | None

    @classmethod
    @torch.no_grad()
    def of(cls, engine, probe: torch.Tensor, want: torch.Tensor | None = None) -> "Lenses":
        """The lenses of ``engine``'s final norm and unembedding, read off the modules and
        checked on ``probe`` (residual-stream rows ``[n, d_model]``): ``ours`` must give
        ``want`` (the model's logits there; default :meth:`Engine.unembed` of ``probe``),
        or this raises."""
        readout = engine.norm_readout(engine.final_norm, probe.float())
        w_u = engine.lm_head.weight.detach()
        offset = None
        bias = readout.bias
        if isinstance(bias, torch.Tensor) and bool(bias.abs().max() > 0):
            offset = w_u.float() @ bias.to(w_u.device)
        head_bias = getattr(engine.lm_head, "bias", None)
        if head_bias is not None:
            offset = head_bias.detach().float() + (0.0 if offset is None else offset)
        lenses = cls(readout, w_u, offset, engine.softcap)
        got = lenses.ours(lenses.project(probe.float()), lenses.scale(probe))
        want = (engine.unembed(probe) if want is None else want).float()
        tol = 1e-3 if probe.dtype == torch.float32 else 5e-2
        if not torch.allclose(got, want, atol=tol * float(want.abs().max().clamp(min=1.0)), rtol=0):
            raise RuntimeError(f"the logit lens of {type(engine.model).__name__} does not reproduce the "
                               f"model's logits (final norm {readout.kind}); unsupported head")
        return lenses

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm's per-token scale ``s(x)``: ``[...]``."""
        return self.readout.scale(x)

    def project(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``A = W_U (g ⊙ c(x))`` for rows ``x`` ``[n, d_model]``: ``[n, V]`` float32 (into
        ``out`` when given)."""
        xn = self.readout.centred(x) * self.readout.gain.to(x.device)
        if self.w_u.dtype != torch.float32:
            a = torch.nn.functional.linear(xn.to(self.w_u.dtype), self.w_u).float()
            return a if out is None else out.copy_(a)
        return torch.mm(xn, self.w_u.T, out=out)

    def ours(self, a: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The point's own norm: ``A / s(x) + W_U b + b_U``, soft-capped like the model."""
        z = a / scale[..., None]
        if self.offset is not None:
            z = z + self.offset
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    @staticmethod
    def authors(a: torch.Tensor, final_scale: torch.Tensor) -> torch.Tensor:
        """The authors' lens: ``A / s(x_final)``, no bias, no soft-capping."""
        return a / final_scale[..., None]


@torch.no_grad()
def lens_point_stats(lenses: Lenses, points: list[torch.Tensor], chunk_bytes: int = LENS_CHUNK_BYTES,
                     block_bytes: int | None = BLOCK_BYTES) -> dict[str, torch.Tensor]:
    """Both lenses at every point: ``{column of LENS_COLUMNS: [n_points, n_rows]}``.

    ``points``: residual-stream rows ``[n_rows, d_model]`` per point, the LAST being the
    final residual (the last block's output), whose own-norm lens is the model's output
    distribution P_final. Rows go in chunks of at most ``chunk_bytes`` of logits; per chunk
    the final point is unembedded first (P_final, and its own statistics), then every other
    point into the same buffer: one unembedding per point and chunk. The vocabulary-sized
    reductions take ``block_bytes`` of rows at a time on the CPU
    (:func:`~stages_of_inference.core.metrics.by_row_blocks`; ``None``: all rows at once).
    """
    n_rows = points[-1].shape[0]
    vocab = lenses.w_u.shape[0]
    final_scale = lenses.scale(points[-1])
    scales = [lenses.scale(x) for x in points]
    out = {col: torch.empty(len(points), n_rows) for col in LENS_COLUMNS}
    rows_per_chunk = max(1, chunk_bytes // (4 * vocab))
    buffer = None

    def both(a, p, s_own, s_final, neg_h):
        return (*distribution_stats(lenses.ours(a, s_own), p, neg_h),
                *distribution_stats(lenses.authors(a, s_final), p, neg_h))

    def reduce(a, p, s_own, s_final, neg_h):
        if block_bytes is not None and a.device.type == "cpu":
            return by_row_blocks(both, (a, p), (s_own, s_final, neg_h), block_bytes)
        return both(a, p, s_own, s_final, neg_h)

    for start in range(0, n_rows, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, n_rows))
        n = rows.stop - rows.start
        if buffer is None or buffer.shape[0] != n:
            buffer = torch.empty(n, vocab, dtype=torch.float32, device=points[-1].device)
        s_final = final_scale[rows]
        for k in [len(points) - 1, *range(len(points) - 1)]:  # the final point first: P_final
            a = lenses.project(points[k][rows].float(), out=buffer)
            if k == len(points) - 1:  # P_final: the model's output distribution
                p = torch.log_softmax(lenses.ours(a, s_final), dim=-1)
                neg_h = (by_row_blocks(lambda lp: (lp.exp() * lp).sum(-1), (p,), (), block_bytes)
                         if block_bytes is not None and p.device.type == "cpu" else (p.exp() * p).sum(-1))
                p = p.exp_()
            stats = reduce(a, p, scales[k][rows], s_final, neg_h)
            for col, value in zip(LENS_COLUMNS, stats):
                out[col][k, rows] = value.float().cpu()
        del p
    return out


# -- the hooked forward pass ---------------------------------------------------------------

SITES = {  # statistic -> the engine's hook site (core.engine, TransformerLens names)
    "pattern": "attn.hook_pattern",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
}
EMBEDDING_SITE = "hook_resid_pre"  # of block 0: the embedding point


def hook_names(n_layers: int) -> dict[str, list[str]]:
    """The engine's hook points used, per statistic: ``{key of SITES: [name per layer]}``,
    and ``"embedding": ["blocks.0.hook_resid_pre"]``."""
    names = {key: [hook_name(i, site) for i in range(n_layers)] for key, site in SITES.items()}
    names["embedding"] = [hook_name(0, EMBEDDING_SITE)]
    return names


@torch.no_grad()
def batch_stats(engine, input_ids: torch.Tensor, first: int = 1, chunk_bytes: int = LENS_CHUNK_BYTES
                ) -> dict[str, torch.Tensor]:
    """Every statistic for one batch: ``{column: [n_layers + 1, batch, T - first]}`` (CPU),
    points in table order (the embedding, then blocks 0..n_layers-1), and
    ``prev5_keys`` ``[T - first]``.

    ``engine`` is a :class:`~stages_of_inference.core.engine.Engine` built with
    ``attn_implementation="eager"`` (attention patterns are hooked). Attention patterns
    and output norms are reduced inside their hooks; the residual stream at every point
    (``[B, T - first, d_model]``, small) is kept for the logit lens
    (:func:`lens_point_stats`), which runs after the pass. The pass itself unembeds only
    the last position, to check the lens against the model's own logits.
    """
    n_layers = engine.n_layers
    names = hook_names(n_layers)
    centre = engine.layernorm  # LayerNorms ignore the all-ones direction
    block_columns = ("prev5_attn", "prev5_attn_authors", "attn_norm", "mlp_norm", "attn_norm_raw", "mlp_norm_raw")
    out = {col: [None] * n_layers for col in block_columns}
    resid: list[torch.Tensor | None] = [None] * (n_layers + 1)  # embedding, blocks 0..n-1
    keys = {}

    def pattern_hook(layer):
        def hook(pattern):
            mean, k = prev_window_attention(pattern)
            out["prev5_attn_authors"][layer] = mean[:, first:]
            out["prev5_attn"][layer] = torch.where(k == N_PREV, mean, torch.full_like(mean, float("nan")))[:, first:]
            keys["prev5_keys"] = k[first:]

        return hook

    def norm_hook(layer, kind):
        def hook(x):
            out[f"{kind}_norm"][layer] = write_norm(x, centre)[:, first:]
            out[f"{kind}_norm_raw"][layer] = write_norm(x, False)[:, first:]

        return hook

    def resid_hook(point):
        def hook(x):
            resid[point] = x[:, first:].detach()

        return hook

    hooks = [(names["embedding"][0], resid_hook(0))]
    for i in range(n_layers):
        hooks += [
            (names["pattern"][i], pattern_hook(i)),
            (names["attn_out"][i], norm_hook(i, "attn")),
            (names["mlp_out"][i], norm_hook(i, "mlp")),
            (names["resid_post"][i], resid_hook(i + 1)),
        ]
    seq_len = input_ids.shape[1]
    last_logits = engine.forward(input_ids, hooks, positions=slice(seq_len - 1, seq_len))
    missing = [col for col, layers in out.items() if any(v is None for v in layers)]
    if missing or any(r is None for r in resid):
        raise RuntimeError(
            f"hooks did not fire for {missing or 'the residual stream'}; does this architecture "
            f"expose {', '.join(v[0] for v in names.values())}? (eager attention is needed "
            f"for attention patterns)"
        )
    b, n_pos, d = resid[-1].shape
    # the lens, checked against the model's own logits at the last position
    lenses = Lenses.of(engine, resid[-1][:, -1], last_logits[:, -1])
    lens = lens_point_stats(lenses, [r.reshape(b * n_pos, d) for r in resid], chunk_bytes)
    result = {col: torch.stack([torch.full((b, n_pos), float("nan"))] + [v.float().cpu() for v in layers])
              for col, layers in out.items()}
    for col, value in lens.items():
        value = value.reshape(n_layers + 1, b, n_pos)
        if col.endswith("_authors"):  # the authors' notebook drops the last position
            value[:, :, -1] = float("nan")
        result[col] = value
    result["prev5_keys"] = keys["prev5_keys"].cpu()
    return result


def extract_layer_stats(engine, tokens: torch.Tensor, *, batch_size: int = 8, first: int = 1,
                        progress: bool = True):
    """Stream ``tokens`` ``[n_seq, T]`` through ``engine`` (eager attention) in batches
    (:func:`~stages_of_inference.core.engine.batched`, which halves the batch on CUDA
    out-of-memory); tidy per-token ``DataFrame`` with columns ``layer`` (-1: the
    embedding), ``seq``, ``pos``, :data:`TOKEN_COLUMNS` and ``prev5_keys``, rows ordered
    (layer, seq, pos)."""
    import pandas as pd
    from tqdm.auto import tqdm

    device = engine.device
    n_seq, seq_len = tokens.shape
    n_layers = engine.n_layers
    keys = {}

    def run(start: int, stop: int) -> dict[str, np.ndarray]:
        stats = batch_stats(engine, tokens[start:stop].to(device), first)
        keys["prev5_keys"] = stats.pop("prev5_keys").numpy()
        return {col: v.numpy() for col, v in stats.items()}  # [L + 1, b, P]

    with tqdm(total=n_seq, desc="layer stats", unit="seq", disable=not progress) as bar:
        parts = batched(n_seq, batch_size, run, progress=bar)
    n_pos = seq_len - first
    n_points = n_layers + 1
    cols = {col: np.concatenate([p[col] for p in parts], axis=1).reshape(-1) for col in TOKEN_COLUMNS}
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(EMBEDDING, n_layers, dtype=np.int32), n_seq * n_pos),
            "seq": np.tile(np.repeat(np.arange(n_seq, dtype=np.int32), n_pos), n_points),
            "pos": np.tile(np.arange(first, seq_len, dtype=np.int32), n_points * n_seq),
            **cols,
            "prev5_keys": np.tile(keys["prev5_keys"].astype(np.int8), n_points * n_seq),
        }
    )


# -- per-layer summary -----------------------------------------------------------------------


def summarise_layer_stats(df, n_layers: int, d_vocab: int | None = None):
    """Per (model, layer) (layer -1: the embedding): ``<column>_mean`` and ``<column>_se``
    of every statistic, the attention/MLP norm ratio (ratio of means, delta-method SE),
    ``n_tokens``, ``n_documents``, ``n_layers``, ``rel_depth`` (``layer / (n_layers - 1)``,
    the workflow's x axis) and ``rel_depth_authors`` (``(layer + 1) / n_layers``: the
    authors' entropy notebook's x axis, the embedding at 0), and ``d_vocab`` when given
    (the entropy of the uniform distribution is log2 of it).

    :data:`POOLED_COLUMNS`: mean and standard error over tokens (NaN skipped).
    :data:`DOCUMENT_COLUMNS`, the authors' aggregation: the mean per document (sequence;
    ``prev5_attn_authors`` weighted by ``prev5_keys``, i.e. over every sub-diagonal entry),
    then the mean and standard error (sample standard deviation / sqrt(n)) over documents.
    """
    import pandas as pd

    keys = ["model", "layer"]
    grouped = df.groupby(keys, sort=True)
    parts = []
    for col in POOLED_COLUMNS:  # NaN (prev5 before q = 5, norms at the embedding) skipped
        agg = grouped[col].agg(["mean", "std", "count"])
        parts.append(pd.DataFrame({f"{col}_mean": agg["mean"],
                                   f"{col}_se": agg["std"] / np.sqrt(agg["count"].clip(lower=1))}))
    per_doc = document_means(df)
    by_doc = per_doc.groupby(keys, sort=True)
    for col in DOCUMENT_COLUMNS:
        agg = by_doc[col].agg(["mean", "std", "count"])
        parts.append(pd.DataFrame({f"{col}_mean": agg["mean"],
                                   f"{col}_se": agg["std"] / np.sqrt(agg["count"].clip(lower=1))}))
    summary = pd.concat(parts, axis=1)
    summary["n_tokens"] = grouped.size()
    summary["n_documents"] = grouped["seq"].nunique()
    summary = summary.reset_index()
    ratios = []
    for (model, layer), g in df.groupby(keys, sort=True):
        a, m = g["attn_norm"].to_numpy(), g["mlp_norm"].to_numpy()
        ratios.append(norm_ratio(a, m) if layer >= 0 and np.isfinite(a).all() and np.isfinite(m).all()
                      else (float("nan"), float("nan")))
    summary["attn_mlp_ratio_mean"] = [r[0] for r in ratios]
    summary["attn_mlp_ratio_se"] = [r[1] for r in ratios]
    summary["n_layers"] = n_layers
    summary["rel_depth"] = rel_depth(summary["layer"], n_layers)
    summary["rel_depth_authors"] = (summary["layer"] + 1) / n_layers
    if d_vocab is not None:
        summary["d_vocab"] = int(d_vocab)
    return summary


def document_means(df):
    """Per (model, layer, seq): the mean of each of :data:`DOCUMENT_COLUMNS` over the
    document's tokens, NaN skipped; ``prev5_attn_authors`` weighted by ``prev5_keys`` (the
    mean of every entry of the document's sub-diagonals 1..5, as ``np.nanmean`` over them
    in the authors' ``attention_prev5.ipynb``)."""
    import pandas as pd

    keys = ["model", "layer", "seq"]
    prev = df["prev5_attn_authors"]
    weight = df["prev5_keys"].astype(float).where(prev.notna(), 0.0)
    tmp = pd.DataFrame({k: df[k] for k in keys})
    tmp["wv"] = (prev * weight).fillna(0.0)
    tmp["w"] = weight
    for col in DOCUMENT_COLUMNS[1:]:
        tmp[col] = df[col]
    g = tmp.groupby(keys, sort=True)
    sums = g[["wv", "w"]].sum()
    out = g[list(DOCUMENT_COLUMNS[1:])].mean()
    out.insert(0, "prev5_attn_authors", (sums["wv"] / sums["w"]).where(sums["w"] > 0))
    return out.reset_index()


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
