"""Self-repair of ablated attention heads (Rushing & Nanda, "Explorations of Self-Repair in
Language Models"; code: starship006/backup_research, ``FINAL_figure_files/
GOOD_breakdown_self_repair.py`` and ``GOOD_helpers.py``).

For every head (L, h) and every scored token t with target token ``tok``, with ``x`` the
final residual stream (before the final norm), ``s(x)`` the final norm's scale (RMSNorm:
``sqrt(mean x² + eps)``; LayerNorm: ``sqrt(var x + eps)``) and ``ũ`` the unembedding row of
``tok`` with the final norm's gain folded in (``g ⊙ W_U[tok]``, Gemma: ``(1 + w) ⊙ W_U[tok]``;
for LayerNorm also centred over ``d_model``, because the centring is linear), so that
``logit_tok(x) = x·ũ / s(x) + const``:

* **direct effect** ``DE = δ_h W_O,h · ũ / s_base`` with ``δ_h = (z_clean − z_abl)_h`` the
  head's change at the output projection's input: the head's change of the logit through
  the unembedding alone, the final-norm scale frozen at the clean run's. With sandwich
  norms (Gemma 3), what attention adds to the residual is ``post_attention_layernorm(a_L)``
  with ``a_L`` the whole output projection at that position, so ``δ_h W_O,h`` is multiplied
  by the clean run's frozen post-norm factor ``(1 + w_post) / rms(a_L)`` (shared by the
  layer's heads): the heads' direct effects sum to the layer's;
* **total effect** ``TE = logit_clean − logit_abl``, the ablated forward pass's logit;
* **self-repair** ``SR = DE − TE``: how much of the direct effect the rest of the model
  gives back. ``SR = 0``: the logit falls by exactly the direct effect; ``SR = DE``: the
  logit does not move (full repair); ``SR > DE``: over-correction. This is the study's
  ``self_repair = logit_diffs − (ablated_direct_effects − direct_effects)`` with
  ``logit_diffs = −TE`` and ``direct_effects − ablated_direct_effects`` = our ``DE``: the same
  number, the same sign.
* its parts, which sum to SR exactly:

  - **final norm** ``SR_norm = x_abl·ũ (1/s_abl − 1/s_base)``: the ablated logit with the
    ablated scale minus the same residual read with the clean scale. The study's
    ``self_repair_from_LN`` is the remainder ``SR − heads − layers`` of its breakdown; on a
    model without sandwich norms that remainder is this number;
  - **MLPs** ``SR_mlp = Σ_{L' ≥ L} (mlp_write_abl − mlp_write_clean)·ũ / s_base`` (the study's
    ``self_repair_from_layers``), read neuron by neuron: ``Σ_n (post_abl,n / r_abl −
    post_clean,n / r_clean) · (g_post ⊙ W_out[n])·ũ / s_base`` with ``r`` the rms of the MLP's
    output before Gemma's ``post_feedforward_layernorm`` (``m = post·W_out + b``) in each run
    and ``g_post = 1 + w`` its gain; ``r = 1``, ``g_post = 1`` without sandwich norms;
  - **own post-norm** ``SR_post_norm`` (sandwich norms only, else 0): how much the ablated
    layer's own post-attention norm gives back by rescaling the layer's write,
    ``a_abl·(g ⊙ ũ) / s_base · (1/rms(a_abl) − 1/rms(a_clean))``;
  - **attention** ``SR_attn``: the rest, i.e. the change of the later attention layers'
    writes (the study's ``self_repair_from_heads``).
* **anti-erasure neurons**: per head, the MLP neurons of layers ≥ L whose direct logit
  contribution (the neuron's term of ``SR_mlp``) rises most from the clean to the ablated
  run, averaged over the head's top tokens.

The study's definition is the default (config ``self_repair``):

* ``ablation: resample``: the head's output (``hook_z``, every position) is replaced by its
  output on another corpus sequence at the same position. The study takes, for prompt j,
  the prompt one batch later (j + its batch size, 30, wrapping around at the end of its
  dataset: ``GOOD_helpers.dataset_generator``) and patches the head's ``z`` from a forward
  pass on it (``path_patching.act_patch``). Here sequence j's source is corpus sequence
  ``(j + resample_offset) mod n`` of the ``n`` corpus sequences (the first ``n_sequences``
  are scored; the others serve only as sources): our corpora hold 8-16 sequences, so an
  offset of the study's batch size is arbitrary modulo n; any offset that does not map a
  sequence to itself draws the replacement from the same distribution. ``mean`` (the
  head's mean over the scored tokens) and ``zero`` are options.
* ``target: next``: the logit of the true next token (the study's
  ``get_correct_logit_score``); ``top1`` (the clean run's prediction) is an option.
* ``positions: all``: every position that has a next token, 0..T−2, BOS included, as the
  study's ``[:, :-1]``; under resample ablation the BOS position's head outputs are the
  same in every sequence, so its effects are exactly 0 (it only counts in the token
  total). ``skip_bos`` starts at the corpus's first position after BOS (the workflow's
  convention for per-token metrics). With ``target: top1`` the last position is scored too.
* ``centre_unembed: true``: logits are read with the unembedding centred over the
  vocabulary (a token's logit minus the mean logit), as the study's TransformerLens models
  (``center_unembed=True``; its Llama run loaded with ``center_unembed=False``, raw logits:
  ``false``).
* Summaries follow the study's "condensed" statistics: means over the
  ``int(top_fraction × tokens)`` tokens (at least 1) with the largest direct effect of each
  head, chosen by ``topk`` as its ``topk_of_Nd_tensor`` (exactly that many, ties broken by
  ``topk``; the study: the top 2 % of ~100k tokens), next to the means over all tokens.

Every ablation of a layer's heads starts from the cached residual entering layer L and runs
the H heads as H variants of one batch (``repeat=H``). No file paths, no plotting here.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from ..core.metrics import rel_depth
from ..core.norms import NormReadout
from ..core.settings import Settings

log = logging.getLogger(__name__)

ABLATIONS = ("resample", "mean", "zero")
TARGETS = ("next", "top1")
POSITIONS = ("all", "skip_bos")

PARTS = ("de", "te", "self_repair", "sr_norm", "sr_attn", "sr_post_norm", "sr_mlp")
TOKEN_COLUMNS = ("layer", "head", "seq", "pos", "target", *PARTS, "top")


class SelfRepairSettings(Settings):
    """The ``self_repair`` config section (keys, defaults and allowed values:
    config/schema.yaml)."""

    section: ClassVar[str] = "self_repair"


# --------------------------------------------------------------------------------------
# The final norm and the unembedding as a linear read-out with a frozen scale
# (``core.norms.NormReadout``: ``logit_tok(x) = x·ũ_tok / s(x) + c_tok``)


def final_readout(engine, probe: torch.Tensor) -> NormReadout:
    """The final norm as a frozen-scale read-out, checked on ``probe`` (final residuals):
    a norm the formula does not reproduce is refused."""
    return engine.norm_readout(engine.final_norm, probe)


@dataclass
class Unembedding:
    """The unembedding rows a target logit reads, optionally centred over the vocabulary
    (TransformerLens ``center_unembed``: every row minus the mean row, the bias minus its
    mean; a token's logit minus the mean logit)."""

    weight: torch.Tensor            # [V, d] float32 (the model's, not copied)
    bias: torch.Tensor | None       # [V]
    mean_row: torch.Tensor | None   # [d] when centred
    mean_bias: torch.Tensor | float

    @classmethod
    def of(cls, engine, centre: bool) -> "Unembedding":
        head = engine.lm_head
        if engine.softcap:
            raise ValueError("self-repair reads logits linearly: a model with final logit soft-capping "
                             f"({engine.softcap}) is not supported.")
        weight = head.weight.detach().float()
        bias = getattr(head, "bias", None)
        bias = None if bias is None else bias.detach().float()
        mean_row = weight.mean(0) if centre else None
        mean_bias = float(bias.mean()) if (centre and bias is not None) else 0.0
        return cls(weight, bias, mean_row, mean_bias)

    def rows(self, targets: torch.Tensor) -> torch.Tensor:
        rows = self.weight[targets]
        return rows - self.mean_row if self.mean_row is not None else rows

    def logit(self, normed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The (centred) logit of ``targets`` from final-normed residuals."""
        logit = (normed.float() * self.rows(targets)).sum(-1)
        if self.bias is not None:
            logit = logit + self.bias[targets] - self.mean_bias
        return logit


def target_directions(engine, readout: NormReadout, targets: torch.Tensor,
                      unembedding: Unembedding | None = None) -> torch.Tensor:
    """``ũ`` of each target token, ``[..., d]``: its unembedding row (centred over the
    vocabulary if ``unembedding`` says so) with the final norm's gain folded in (centred
    over ``d_model`` for LayerNorm)."""
    rows = unembedding.rows(targets) if unembedding is not None else engine.lm_head.weight.detach().float()[targets]
    return readout.directions(rows)


def target_logit(engine, hidden: torch.Tensor, targets: torch.Tensor,
                 unembedding: Unembedding | None = None) -> torch.Tensor:
    """The model's own logit of ``targets`` (final norm module + lm_head row, bias
    included; minus the mean logit when ``unembedding`` is centred)."""
    unembedding = unembedding or Unembedding.of(engine, centre=False)
    return unembedding.logit(engine.final_norm(hidden), targets)


def head_out_weights(engine, layer: int) -> torch.Tensor:
    """``W_O`` per head, ``[H, d_head, d_model]``: hook_z (flattened) @ W -> o_proj output."""
    return engine.head_out_weights(layer).detach().float()


def mlp_out_weights(engine, layer: int) -> torch.Tensor:
    """The down projection as ``[d_mlp, d_model]`` (hook_post @ W -> the MLP's output, before
    a sandwich post-norm)."""
    return engine.mlp_out_weights(layer).detach().float()


def _bias(module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach().float()


@dataclass
class Writes:
    """How the model's attention and MLP outputs reach the residual stream: per layer the
    output projections (``W_O`` [H, d_head, d], ``W_out`` [d_mlp, d], biases) and, with
    sandwich norms, the post-norms as frozen-scale read-outs (None otherwise)."""

    w_o: list[torch.Tensor]
    b_o: list[torch.Tensor | None]
    w_out: list[torch.Tensor]
    b_out: list[torch.Tensor | None]
    attn_post: list[NormReadout | None]
    mlp_post: list[NormReadout | None]

    @classmethod
    def of(cls, engine) -> "Writes":
        n, device = engine.n_layers, engine.device
        return cls(
            w_o=[head_out_weights(engine, L).to(device) for L in range(n)],
            b_o=[_bias(engine.attn_out_proj(L)) for L in range(n)],
            w_out=[mlp_out_weights(engine, L).contiguous().to(device) for L in range(n)],
            b_out=[_bias(engine.mlp_out_proj(L)) for L in range(n)],
            attn_post=[None] * n, mlp_post=[None] * n)

    def attn_output(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """The output projection of ``z`` ``[..., H, d_head]`` (before a post-norm)."""
        a = torch.einsum("...hk,hkd->...d", z.float(), self.w_o[layer])
        return a if self.b_o[layer] is None else a + self.b_o[layer]

    def mlp_output(self, layer: int, post: torch.Tensor) -> torch.Tensor:
        """The down projection of ``post`` ``[..., d_mlp]`` (before a post-norm)."""
        m = post.float() @ self.w_out[layer]
        return m if self.b_out[layer] is None else m + self.b_out[layer]

    def readouts(self, engine, layer: int, a: torch.Tensor, m: torch.Tensor) -> None:
        """Read the layer's post-norms (sandwich norms) once, checked on ``a`` and ``m``."""
        for store, norm, probe in ((self.attn_post, engine.attn_post_norm(layer), a),
                                   (self.mlp_post, engine.mlp_post_norm(layer), m)):
            if norm is not None and store[layer] is None:
                store[layer] = engine.norm_readout(norm, probe.to(engine.dtype))


def _scale(readout: NormReadout | None, x: torch.Tensor) -> torch.Tensor:
    """A post-norm's rms of ``x`` per token; 1 without a post-norm."""
    return readout.scale(x) if readout is not None else torch.ones(x.shape[:-1], device=x.device)


def _dirs(readout: NormReadout | None, u: torch.Tensor) -> torch.Tensor:
    """``ũ`` read through a post-norm's gain (``g ⊙ ũ``; centred for LayerNorm)."""
    return readout.directions(u) if readout is not None else u


# --------------------------------------------------------------------------------------
# Per batch: the baseline pieces every head's ablation needs


@dataclass
class Baseline:
    z: list[torch.Tensor]          # per layer [B, T, H, d_head] (float32)
    post: list[torch.Tensor]       # per layer [B, P, d_mlp] at scored positions
    targets: torch.Tensor          # [B, P]
    u: torch.Tensor                # [B, P, d] ũ of the targets
    s: torch.Tensor                # [B, P] clean final-norm scale
    logit: torch.Tensor            # [B, P] clean target logit
    positions: slice
    attn_out: list[torch.Tensor | None]   # per layer [B, P, d] o_proj output (sandwich norms)
    attn_rms: list[torch.Tensor]          # per layer [B, P] its post-norm rms (1 without)
    mlp_rms: list[torch.Tensor]           # per layer [B, P] the MLP output's post-norm rms (1 without)


def scored_positions(seq_len: int, first: int, target: str) -> slice:
    """Positions scored: ``first..T-2`` for the true next token (the last position has
    none), ``first..T-1`` for top-1 targets."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: use one of {', '.join(TARGETS)}.")
    return slice(first, seq_len - 1 if target == "next" else seq_len)


def _capture(store: dict, key, positions=None):
    def fn(t):
        t = t.detach().float()
        store[key] = t if positions is None else t[:, positions]
        return None

    return fn


def final_residual(engine, positions: slice) -> torch.Tensor:
    """The baseline's final residual stream (before the final norm) at ``positions``."""
    n = engine.n_layers
    return engine.run_from(n - 1, order=[n - 1], output="residual")[:, positions]


def head_z(engine, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's ``hook_z`` on ``input_ids`` (float32), from a pass that stops after the
    last block (no unembedding, the recorded baseline untouched)."""
    names = [f"blocks.{L}.attn.hook_z" for L in range(engine.n_layers)]
    _, cache = engine.run_with_cache(input_ids, names, logits=False)
    return [cache[name].float() for name in names]


def run_baseline(engine, input_ids, first: int, target: str, readout: NormReadout | None,
                 writes: Writes, unembedding: Unembedding, with_post: bool = True
                 ) -> tuple[Baseline, NormReadout]:
    n = engine.n_layers
    positions = scored_positions(input_ids.shape[1], first, target)
    z: dict = {}
    post: dict = {}
    hooks = [(f"blocks.{L}.attn.hook_z", _capture(z, L)) for L in range(n)]
    sandwich = engine.sandwich_norms
    if with_post or sandwich:
        hooks += [(f"blocks.{L}.mlp.hook_post", _capture(post, L, positions)) for L in range(n)]
    # logits only where top-1 targets need them (the unembedding of a 262k vocabulary is costly)
    logits = engine.baseline(input_ids, hooks=hooks, positions=positions if target == "top1" else slice(0, 1))
    if target == "top1":
        targets = logits.argmax(-1)
    else:
        targets = input_ids[:, positions.start + 1: positions.stop + 1]
    del logits
    x = final_residual(engine, positions)
    if readout is None:
        readout = final_readout(engine, x)
    attn_out, attn_rms, mlp_rms = [], [], []
    for L in range(n):
        if sandwich:
            a = writes.attn_output(L, z[L][:, positions])
            m = writes.mlp_output(L, post[L])
            writes.readouts(engine, L, a, m)
            attn_out.append(a)
            attn_rms.append(_scale(writes.attn_post[L], a))
            mlp_rms.append(_scale(writes.mlp_post[L], m))
        else:
            ones = torch.ones(targets.shape, device=x.device)
            attn_out.append(None)
            attn_rms.append(ones)
            mlp_rms.append(ones)
    base = Baseline(
        z=[z[L] for L in range(n)],
        post=[post[L] for L in range(n)] if with_post else [],
        targets=targets,
        u=target_directions(engine, readout, targets, unembedding),
        s=readout.scale(x),
        logit=unembedding.logit(engine.final_norm(x), targets),
        positions=positions,
        attn_out=attn_out, attn_rms=attn_rms, mlp_rms=mlp_rms,
    )
    return base, readout


def resample_sources(n_scored: int, n_available: int, offset: int) -> np.ndarray:
    """The source sequence of each scored sequence j: ``(j + offset) mod n_available``."""
    if n_available < 2:
        raise ValueError("resample ablation needs at least 2 corpus sequences.")
    if offset % n_available == 0:
        raise ValueError(f"self_repair.resample_offset {offset} maps every one of the {n_available} corpus "
                         f"sequences onto itself; use an offset that is not a multiple of {n_available}.")
    return (np.arange(n_scored) + offset) % n_available


def ablated_z(base: Baseline, layer: int, ablation: str, mean_z: torch.Tensor | None,
              source_z: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The replacement for every head of ``layer``: ``[B, T, H, d_head]``."""
    z = base.z[layer]
    if ablation == "zero":
        return torch.zeros_like(z)
    if ablation == "mean":
        return mean_z[layer].to(z).expand_as(z)
    if ablation == "resample":
        if source_z is None:
            raise ValueError("resample ablation needs the source sequences' hook_z.")
        return source_z[layer].to(z)  # the head's output on another sequence, same position
    raise ValueError(f"ablation {ablation!r}: use one of {', '.join(ABLATIONS)}.")


def head_directions(base: Baseline, writes: Writes, layer: int) -> torch.Tensor:
    """``[B, P, H, d_head]``: the direct logit effect per unit of each head's ``z``:
    ``W_O,h · (g_post ⊙ ũ) / (rms(a_L) s_base)`` (``g_post``, ``rms`` = 1 without sandwich norms)."""
    u = _dirs(writes.attn_post[layer], base.u) / (base.attn_rms[layer] * base.s)[..., None]
    return torch.einsum("bpd,hkd->bphk", u, writes.w_o[layer])


def direct_effects(base: Baseline, layer: int, writes: Writes, z_abl: torch.Tensor) -> torch.Tensor:
    """DE of every head of ``layer``, ``[H, B, P]``: δ_h W_O,h · (frozen post-norm factor) · ũ / s_base."""
    p = base.positions
    return torch.einsum("bphk,bphk->hbp", base.z[layer][:, p] - z_abl[:, p], head_directions(base, writes, layer))


def neuron_directions(base: Baseline, writes: Writes) -> list[torch.Tensor]:
    """Per layer ``[B, P, d_mlp]``: each neuron's direct logit contribution per unit of
    activation (per unit of ``post / r`` with sandwich norms), ``(g_post ⊙ W_out[n])·ũ / s_base``."""
    return [torch.einsum("bpd,nd->bpn", _dirs(writes.mlp_post[L], base.u) / base.s[..., None], w)
            for L, w in enumerate(writes.w_out)]


def ablate_layer(engine, base: Baseline, readout: NormReadout, unembedding: Unembedding, writes: Writes,
                 layer: int, z_abl: torch.Tensor, ndirs: list[torch.Tensor], top_mask: torch.Tensor | None = None,
                 neuron_acc: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Ablate each head of ``layer`` in turn, all heads as variants of one batch.

    Returns ``{de, te, self_repair, sr_norm, sr_attn, sr_post_norm, sr_mlp}``, each
    ``[H, B, P]``. ``neuron_acc`` (``[H, n_layers, d_mlp]``), if given, accumulates each
    neuron's change of direct contribution (ablated − clean) summed over the tokens in
    ``top_mask`` (``[H, B, P]``, 1 for a head's top tokens).
    """
    n, n_heads = engine.n_layers, engine.n_heads
    z_clean = base.z[layer]
    b, t, _, d_head = z_clean.shape
    p = base.positions
    n_pos = base.targets.shape[1]
    heads = torch.arange(n_heads, device=z_clean.device)
    replacement = z_abl.permute(2, 0, 1, 3)  # [H(ablated head), B, T, d_head]

    def ablate(z):
        z = z.contiguous().clone()
        view = z.view(n_heads, b, t, n_heads, d_head)  # variant i ablates head i
        view[heads, :, :, heads] = replacement.to(z.dtype)
        return z

    sr_mlp = torch.zeros(n_heads, b, n_pos, device=z_clean.device)

    def neuron_hook(lp):
        post_readout = writes.mlp_post[lp]

        def fn(post):
            post = post[:, p].float().reshape(n_heads, b, n_pos, -1)
            if post_readout is None:
                delta = post - base.post[lp][None]
            else:  # sandwich norms: each run's write is post·W_out / r (r: the post-norm's rms)
                r_abl = post_readout.scale(writes.mlp_output(lp, post))  # [H, B, P]
                r_clean = base.mlp_rms[lp][None]
                delta = post / r_abl[..., None] - base.post[lp][None] / r_clean[..., None]
                if writes.b_out[lp] is not None:  # the bias, rescaled
                    bias_dir = (_dirs(post_readout, base.u) * writes.b_out[lp]).sum(-1) / base.s
                    sr_mlp.add_(bias_dir[None] * (1.0 / r_abl - 1.0 / r_clean))
            contrib = delta * ndirs[lp][None]
            sr_mlp.add_(contrib.sum(-1))
            if neuron_acc is not None:
                neuron_acc[:, lp].add_(torch.einsum("hbpn,hbp->hn", contrib, top_mask))
            return None

        return fn

    hooks = [(f"blocks.{layer}.attn.hook_z", ablate)]
    hooks += [(f"blocks.{lp}.mlp.hook_post", neuron_hook(lp)) for lp in range(layer, n)]
    x_abl = engine.run_from(layer, hooks=hooks, repeat=n_heads, output="residual")
    x_abl = x_abl[:, p].float().reshape(n_heads, b, n_pos, -1)
    targets = base.targets.expand(n_heads, -1, -1)
    logit_abl = unembedding.logit(engine.final_norm(x_abl), targets)
    s_abl = readout.scale(x_abl)
    de = direct_effects(base, layer, writes, z_abl)
    te = base.logit[None] - logit_abl
    sr = de - te
    sr_norm = (x_abl * base.u[None]).sum(-1) * (1.0 / s_abl - 1.0 / base.s[None])
    post_readout = writes.attn_post[layer]
    if post_readout is not None:
        delta = (z_clean[:, p] - z_abl[:, p]).float()  # [B, P, H, d_head]
        a_abl = base.attn_out[layer][None] - torch.einsum("bphk,hkd->hbpd", delta, writes.w_o[layer])
        gu = _dirs(post_readout, base.u) / base.s[..., None]
        sr_post_norm = (a_abl * gu[None]).sum(-1) * (1.0 / post_readout.scale(a_abl) - 1.0 / base.attn_rms[layer][None])
    else:
        sr_post_norm = torch.zeros_like(sr)
    return {"de": de, "te": te, "self_repair": sr, "sr_norm": sr_norm,
            "sr_attn": sr - sr_norm - sr_mlp - sr_post_norm, "sr_post_norm": sr_post_norm, "sr_mlp": sr_mlp}


# --------------------------------------------------------------------------------------
# The corpus: three streamed passes


def _batches(n_seq: int, batch_size: int) -> list[np.ndarray]:
    """Near-equal consecutive batches."""
    n_batches = max(1, math.ceil(n_seq / batch_size))
    return [a for a in np.array_split(np.arange(n_seq), n_batches) if len(a)]


def corpus_mean_z(engine, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean of every head's hook_z over all positions of ``tokens``: ``[n_layers, H, d_head]``."""
    total, count = None, 0
    for idx in _batches(tokens.shape[0], batch_size):
        z = head_z(engine, tokens[idx].to(engine.device))
        s = torch.stack([zl.sum((0, 1)) for zl in z])
        total = s if total is None else total + s
        count += z[0].shape[0] * z[0].shape[1]
    return total / count


def top_count(top_fraction: float, n_tokens: int) -> int:
    """How many tokens a head's summary averages over: ``int(top_fraction × n_tokens)`` as
    the study's ``num_top_instances`` (at least 1)."""
    return max(1, int(top_fraction * n_tokens))


def top_masks(de_all: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, H, n_seq, P]`` booleans: each head's ``k`` tokens of largest DE (``topk`` over
    its (sequence, position) grid, as the study's ``topk_of_Nd_tensor``)."""
    flat = de_all.flatten(2)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(-1, flat.topk(k, dim=-1).indices, True)
    return mask.view(de_all.shape)


@dataclass
class SelfRepairResult:
    tokens: pd.DataFrame      # one row per (head, token): TOKEN_COLUMNS
    heads: pd.DataFrame       # one row per head: summarise_heads
    neurons: pd.DataFrame     # top-k anti-erasure neurons per head


def run_self_repair(engine, tokens: torch.Tensor, first: int = 1, *, n_sequences: int | None = None,
                    ablation: str = "resample", target: str = "next", resample_offset: int = 1,
                    centre_unembed: bool = True, top_fraction: float = 0.02, n_top_neurons: int = 10,
                    batch_size: int = 4, progress: bool = True) -> SelfRepairResult:
    """Every head of every layer. ``tokens`` ([n, seq_len]): the first ``n_sequences`` (all
    by default) are scored from position ``first`` on; resample ablation draws from all
    ``n`` (module docstring)."""
    from tqdm.auto import tqdm

    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r}: use one of {', '.join(ABLATIONS)}.")
    n, n_heads = engine.n_layers, engine.n_heads
    device = engine.device
    n_seq = tokens.shape[0] if n_sequences is None else min(n_sequences, tokens.shape[0])
    batches = _batches(n_seq, batch_size)
    sources = resample_sources(n_seq, tokens.shape[0], resample_offset) if ablation == "resample" else None
    with torch.inference_mode():
        writes = Writes.of(engine)
        unembedding = Unembedding.of(engine, centre_unembed)
        mean_z = corpus_mean_z(engine, tokens[:n_seq], batch_size) if ablation == "mean" else None

        def replacements(idx):
            return head_z(engine, tokens[sources[idx]].to(device)) if sources is not None else None

        # pass 1: every head's direct effect (cheap: baselines only) -> its top tokens
        readout = None
        des = []
        for idx in batches:
            src = replacements(idx)
            base, readout = run_baseline(engine, tokens[idx].to(device), first, target, readout, writes,
                                         unembedding, with_post=False)
            des.append(torch.stack([direct_effects(base, L, writes, ablated_z(base, L, ablation, mean_z, src))
                                    for L in range(n)]).cpu())  # [N, H, B, P]
        de_all = torch.cat(des, dim=2)  # [N, H, n_seq, P]
        n_tok = de_all.shape[2] * de_all.shape[3]
        k = top_count(top_fraction, n_tok)
        masks = top_masks(de_all, k)
        log.info("%d scored tokens per head; top %d (%.3g) by direct effect", n_tok, k, top_fraction)

        # pass 2: the ablations, one batch of H variants per (batch, layer)
        n_pos = de_all.shape[3]
        out = {name: np.empty((n, n_heads, n_seq, n_pos), dtype=np.float32) for name in PARTS}
        targets = np.empty((n_seq, n_pos), dtype=np.int64)
        d_mlp = writes.w_out[0].shape[0]
        neuron_acc = torch.zeros(n, n_heads, n, d_mlp, device=device)
        bar = tqdm(total=len(batches) * n, desc=f"self-repair {n}x{n_heads} heads", unit="layer",
                   disable=not progress)
        for idx in batches:
            src = replacements(idx)
            base, readout = run_baseline(engine, tokens[idx].to(device), first, target, readout, writes,
                                         unembedding)
            targets[idx] = base.targets.cpu().numpy()
            ndirs = neuron_directions(base, writes)
            for L in range(n):
                top_mask = masks[L][:, idx].to(device).float()
                res = ablate_layer(engine, base, readout, unembedding, writes, L,
                                   ablated_z(base, L, ablation, mean_z, src), ndirs, top_mask, neuron_acc[L])
                for name, value in res.items():
                    out[name][L][:, idx] = value.cpu().numpy()
                bar.update(1)
            del base, ndirs, src
            engine.calls = []  # free the last batch's recorded block calls
        bar.close()
        neuron_acc = neuron_acc.cpu()

    tokens_df = token_table(out, targets, masks.numpy(), first)
    heads_df = summarise_heads(tokens_df, n)
    neurons_df = anti_erasure_neurons(neuron_acc, heads_df, n_top_neurons)
    log.info("final norm: %s; logits %s", readout.kind, "centred over the vocabulary" if centre_unembed else "raw")
    return SelfRepairResult(tokens=tokens_df, heads=heads_df, neurons=neurons_df)


SETTING_COLUMNS = ("ablation", "target", "positions", "centre_unembed")


def self_repair_study(engine, tokens: torch.Tensor, first: int, model: str, settings,
                      progress: bool = True) -> SelfRepairResult:
    """The ``self_repair`` rule's tables for one model: the corpus tokens cut to
    ``seq_len``, the first ``n_sequences`` of them scored (the others are resample sources),
    every head ablated (:func:`run_self_repair` with the section's settings); every table
    gets the ``model`` as its first column, the per-head table also ``n_layers`` and the
    definition (``SETTING_COLUMNS``) as its last."""
    import time

    settings = settings if isinstance(settings, SelfRepairSettings) else SelfRepairSettings.from_config(settings)
    tokens = tokens[:, : settings.seq_len]
    start = first if settings.positions == "skip_bos" else 0
    n_seq = min(settings.n_sequences, tokens.shape[0])
    log.info("%s: self-repair of %d x %d heads on %d x %d tokens (%s ablation, %s target, positions from %d, "
             "%s logits)", model, engine.n_layers, engine.n_heads, n_seq, tokens.shape[1], settings.ablation,
             settings.target, start, "centred" if settings.centre_unembed else "raw")
    t0 = time.perf_counter()
    res = run_self_repair(engine, tokens, start, n_sequences=n_seq, ablation=settings.ablation,
                          target=settings.target, resample_offset=settings.resample_offset,
                          centre_unembed=settings.centre_unembed, top_fraction=settings.top_fraction,
                          n_top_neurons=settings.n_top_neurons, batch_size=settings.batch_size, progress=progress)
    log.info("all heads took %.1f s", time.perf_counter() - t0)
    for df in (res.heads, res.tokens, res.neurons):
        df.insert(0, "model", model)
    res.heads["n_layers"] = engine.n_layers
    for key in SETTING_COLUMNS:
        res.heads[key] = getattr(settings, key)
    for key, value in headline(res.heads, res.neurons).items():
        log.info("%s: %s = %s", model, key, value)
    return res


def headline(heads: pd.DataFrame, neurons: pd.DataFrame) -> dict:
    """The study's summary numbers for one model (means over each head's top tokens):
    heads that repair more than half their direct effect; self-repair and its parts as
    shares of the summed direct effect of the heads with DE > 0; the median over those
    heads of the final norm's clipped share of DE (the study's ``percent_LN_of_DE``); the
    median share of each head's MLP repair carried by its top anti-erasure neurons."""
    pos = heads[heads["de"] > 0]
    total = float(pos["de"].sum())
    share = {f"{c}/sum_de": (float(pos[c].sum()) / total if total else float("nan"))
             for c in ("self_repair", "sr_norm", "sr_mlp", "sr_attn", "sr_post_norm")}
    out = {"heads": len(heads), "heads_de_positive": len(pos),
           "heads_repair_gt_half": int(((heads["self_repair"] > heads["de"] / 2) & (heads["de"] > 0)).sum()),
           **share, "median_norm_pct_de": float(pos["norm_pct_de"].median()) if len(pos) else float("nan")}
    if len(neurons):
        top = neurons.groupby(["layer", "head"])["repair"].sum()
        mlp = heads.set_index(["layer", "head"])["sr_mlp"].reindex(top.index)
        ok = mlp > 0
        median_share = float((top[ok] / mlp[ok]).median()) if ok.any() else float("nan")
        out["median_top_neurons_share_of_mlp_repair"] = median_share
    return out


# --------------------------------------------------------------------------------------
# Tables


def token_table(out: dict, targets: np.ndarray, top: np.ndarray, first: int) -> pd.DataFrame:
    """One row per (head, token); ``top``: ``[N, H, n_seq, P]`` booleans (the head's top tokens)."""
    n, n_heads, n_seq, n_pos = out["de"].shape
    layer, head, seq, pos = np.meshgrid(np.arange(n), np.arange(n_heads), np.arange(n_seq),
                                        np.arange(first, first + n_pos), indexing="ij")
    df = pd.DataFrame({
        "layer": layer.ravel().astype(np.int16),
        "head": head.ravel().astype(np.int16),
        "seq": seq.ravel().astype(np.int32),
        "pos": pos.ravel().astype(np.int32),
        "target": np.broadcast_to(targets, out["de"].shape).ravel().astype(np.int64),
    })
    for name in PARTS:
        df[name] = out[name].ravel()
    df["top"] = np.asarray(top, dtype=bool).ravel()
    return df


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _ratio(a, b):
    return float(a / b) if b != 0 else float("nan")


def summarise_heads(tokens_df: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """One row per head. Means over the head's top tokens (``de``, ``te``, ``self_repair``,
    ``sr_norm``, ``sr_attn``, ``sr_post_norm``, ``sr_mlp``) and over all tokens (``*_all``); ratios of the top
    means: ``repair_frac`` = SR/DE, ``norm_frac_de`` = SR_norm/DE, ``norm_share`` =
    SR_norm/SR; the authors' clipped per-token percentages averaged over the top tokens
    (``norm_pct_de`` = mean clip(SR_norm/DE, 0, 1), the study's ``percent_LN_of_DE``;
    ``repair_pct_de`` likewise, its ``percent_self_repair_of_DE``; x/0 clips to 0 or 1 and 0/0
    is skipped, as its ``np.clip`` + ``nanmean``); the spread
    of the per-token SR/DE over the top tokens (``ratio_q10/q50/q90``) and the fractions of
    top tokens that over-correct (SR > DE) or anti-repair (SR < 0)."""
    rows = []
    cols = PARTS
    for (layer, head), g in tokens_df.groupby(["layer", "head"], sort=True):
        top = g[g["top"]]
        m = {c: float(top[c].mean()) for c in cols}
        ratio = (top["self_repair"] / top["de"]).replace([np.inf, -np.inf], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm_pct = np.clip(top["sr_norm"] / top["de"], 0, 1)
            repair_pct = np.clip(ratio, 0, 1)
        row = {"layer": int(layer), "head": int(head),
               "rel_depth": rel_depth(int(layer), n_layers), "n_top": len(top), "n_tokens": len(g),
               **m, **{f"{c}_all": float(g[c].mean()) for c in cols},
               "repair_frac": _ratio(m["self_repair"], m["de"]),
               "norm_frac_de": _ratio(m["sr_norm"], m["de"]),
               "norm_share": _ratio(m["sr_norm"], m["self_repair"]),
               "norm_pct_de": _nanmean(norm_pct), "repair_pct_de": _nanmean(repair_pct),
               "ratio_q10": float(ratio.quantile(0.1)), "ratio_q50": float(ratio.quantile(0.5)),
               "ratio_q90": float(ratio.quantile(0.9)),
               "frac_overcorrect": float((top["self_repair"] > top["de"]).mean()),
               "frac_negative": float((top["self_repair"] < 0).mean())}
        rows.append(row)
    return pd.DataFrame(rows)


def anti_erasure_neurons(neuron_acc: torch.Tensor, heads_df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top-``k`` anti-erasure neurons per head: the largest mean rise (ablated − clean) of a
    later neuron's direct contribution to the target logit over the head's top tokens.
    ``repair`` is that mean (logits), ``frac_of_de`` = repair / the head's mean DE,
    ``frac_of_mlp`` = repair / the head's mean MLP self-repair (both on the top tokens)."""
    n, n_heads, _, d_mlp = neuron_acc.shape
    rows = []
    heads = heads_df.set_index(["layer", "head"])
    for L in range(n):
        for h in range(n_heads):
            info = heads.loc[(L, h)]
            acc = neuron_acc[L, h, L:].flatten() / max(int(info["n_top"]), 1)
            values, index = acc.topk(min(k, acc.numel()))
            for rank, (v, i) in enumerate(zip(values.tolist(), index.tolist())):
                rows.append({"layer": L, "head": h, "rank": rank, "neuron_layer": L + i // d_mlp,
                             "neuron": i % d_mlp, "repair": v,
                             "frac_of_de": _ratio(v, info["de"]),
                             "frac_of_mlp": _ratio(v, info["sr_mlp"])})
    return pd.DataFrame(rows)
