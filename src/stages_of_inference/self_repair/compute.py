"""Self-repair of ablated attention heads (Rushing & Nanda, "Explorations of Self-Repair in
Language Models"; code: starship006/backup_research, FINAL_figure_files).

For every head (L, h) and every scored token t with target token ``tok`` (the baseline's
top-1 prediction or the true next token), with ``x`` the final residual stream (before the
final norm), ``s(x)`` the final norm's scale (RMSNorm: ``sqrt(mean x² + eps)``; LayerNorm:
``sqrt(var x + eps)``) and ``ũ`` the unembedding direction of ``tok`` with the norm's gain
folded in (``g ⊙ W_U[tok]``; for LayerNorm also centred, because the centring is linear),
so that ``logit_tok(x) = x·ũ / s(x) + const``:

* **direct effect** ``DE = (z_clean − z_abl)_h W_O,h · ũ / s_base``: the head's change of
  the logit through the unembedding alone, the scale frozen at the baseline's;
* **total effect** ``TE = logit_clean − logit_abl``, the ablated forward pass's logit;
* **self-repair** ``SR = DE − TE``: how much of the direct effect the rest of the model
  gives back. ``SR = 0``: the logit falls by exactly the direct effect; ``SR = DE``: the
  logit does not move (full repair); ``SR > DE``: over-correction. This is the authors'
  ``self_repair = logit_diff − (ablated_DE − DE)`` with ``logit_diff = −TE`` and
  ``DE − ablated_DE`` = our ``DE``: the same number, the same sign.
* its parts: **final norm** ``SR_norm = x_abl·ũ (1/s_abl − 1/s_base)`` (the ablated logit
  with the ablated scale minus the same residual read with the baseline's scale; the
  authors' "LayerNorm" part) and **later layers** ``SR − SR_norm = Σ_later (out_abl −
  out_clean)·ũ / s_base``, split into **MLP** (every MLP from layer L on, from its neuron
  activations) and **attention** (the rest: attention layers after L).
* **anti-erasure neurons**: per head, the MLP neurons of layers ≥ L whose direct logit
  contribution ``post_n · (W_out[:, n]·ũ) / s_base`` rises most from the clean to the
  ablated run, averaged over the head's top tokens.

Summaries follow the authors' "condensed" statistics: means over the ``top_fraction`` of
tokens with the largest direct effect of that head (they use the top 2 %), next to the
means over all tokens.

Every ablation of a layer's heads starts from the cached residual entering layer L and runs
the H heads as H variants of one batch (``repeat=H``). No file paths, no plotting here.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.metrics import rel_depth
from ..core.norms import NormReadout

log = logging.getLogger(__name__)

ABLATIONS = ("mean", "resample", "zero")
TARGETS = ("top1", "next")

TOKEN_COLUMNS = ("layer", "head", "seq", "pos", "target", "de", "te", "self_repair",
                 "sr_norm", "sr_attn", "sr_mlp", "top")


# --------------------------------------------------------------------------------------
# The final norm and the unembedding as a linear read-out with a frozen scale
# (``core.norms.NormReadout``: ``logit_tok(x) = x·ũ_tok / s(x) + c_tok``)


def final_readout(engine, probe: torch.Tensor) -> NormReadout:
    """The final norm as a frozen-scale read-out, checked on ``probe`` (final residuals):
    a norm the formula does not reproduce is refused."""
    return NormReadout.from_module(engine.final_norm, probe)


def target_directions(engine, readout: NormReadout, targets: torch.Tensor) -> torch.Tensor:
    """``ũ`` of each target token, ``[..., d]``: its unembedding row with the final norm's
    gain folded in (centred for LayerNorm)."""
    return readout.directions(engine.lm_head.weight.detach()[targets].float())


def head_out_weights(engine, layer: int) -> torch.Tensor:
    """``W_O`` per head, ``[H, d_head, d_model]``: hook_z (flattened) @ W -> attn output."""
    return engine.head_out_weights(layer).detach().float()


def mlp_out_weights(engine, layer: int) -> torch.Tensor:
    """The down projection as ``[d_mlp, d_model]`` (hook_post @ W -> mlp output)."""
    return engine.mlp_out_weights(layer).detach().float()


# --------------------------------------------------------------------------------------
# Per batch: the baseline pieces every head's ablation needs


@dataclass
class Baseline:
    z: list[torch.Tensor]          # per layer [B, T, H, d_head] (float32)
    post: list[torch.Tensor]       # per layer [B, P, d_mlp] at scored positions
    targets: torch.Tensor          # [B, P]
    u: torch.Tensor                # [B, P, d] ũ of the targets
    s: torch.Tensor                # [B, P] baseline scale
    logit: torch.Tensor            # [B, P] baseline target logit
    positions: slice


def scored_positions(seq_len: int, first: int, target: str) -> slice:
    """Positions scored: ``first..T-1`` for top-1 targets, ``first..T-2`` for the true next
    token (the last position has none)."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: use one of {', '.join(TARGETS)}.")
    return slice(first, seq_len if target == "top1" else seq_len - 1)


def _capture(store: dict, key, positions=None):
    def fn(t):
        t = t.detach().float()
        store[key] = t if positions is None else t[:, positions]
        return None

    return fn


def target_logit(engine, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own logit of ``targets`` (final norm module + lm_head row, bias included)."""
    normed = engine.final_norm(hidden).float()
    head = engine.lm_head
    logit = (normed * head.weight.detach().float()[targets]).sum(-1)
    bias = getattr(head, "bias", None)
    if bias is not None:
        logit = logit + bias.detach().float()[targets]
    return logit


def final_residual(engine, positions: slice) -> torch.Tensor:
    """The baseline's final residual stream (before the final norm) at ``positions``."""
    n = engine.n_layers
    return engine.run_from(n - 1, order=[n - 1], output="residual")[:, positions]


def run_baseline(engine, input_ids, first: int, target: str, readout: NormReadout | None,
                 with_post: bool = True) -> tuple[Baseline, NormReadout]:
    n = engine.n_layers
    positions = scored_positions(input_ids.shape[1], first, target)
    z: dict = {}
    post: dict = {}
    hooks = [(f"blocks.{L}.attn.hook_z", _capture(z, L)) for L in range(n)]
    if with_post:
        hooks += [(f"blocks.{L}.mlp.hook_post", _capture(post, L, positions)) for L in range(n)]
    logits = engine.baseline(input_ids, hooks=hooks)
    if target == "top1":
        targets = logits[:, positions].argmax(-1)
    else:
        targets = input_ids[:, positions.start + 1: positions.stop + 1]
    del logits
    x = final_residual(engine, positions)
    if readout is None:
        readout = final_readout(engine, x)
    base = Baseline(
        z=[z[L] for L in range(n)],
        post=[post[L] for L in range(n)] if with_post else [],
        targets=targets,
        u=target_directions(engine, readout, targets),
        s=readout.scale(x),
        logit=target_logit(engine, x, targets),
        positions=positions,
    )
    return base, readout


def ablated_z(base: Baseline, layer: int, ablation: str, mean_z: torch.Tensor | None) -> torch.Tensor:
    """The replacement for every head of ``layer``: ``[B, T, H, d_head]``."""
    z = base.z[layer]
    if ablation == "zero":
        return torch.zeros_like(z)
    if ablation == "mean":
        return mean_z[layer].to(z).expand_as(z)
    if ablation == "resample":
        if z.shape[0] < 2:
            raise ValueError("resample ablation needs batches of at least 2 sequences.")
        return z.roll(1, dims=0)  # the head's output on another sequence, same position
    raise ValueError(f"ablation {ablation!r}: use one of {', '.join(ABLATIONS)}.")


def direct_effects(base: Baseline, layer: int, w_o: torch.Tensor, z_abl: torch.Tensor) -> torch.Tensor:
    """DE of every head of ``layer``, ``[H, B, P]``: (z_clean − z_abl)_h W_O,h · ũ / s_base."""
    p = base.positions
    u_heads = torch.einsum("bpd,hkd->bphk", base.u, w_o) / base.s[..., None, None]
    return torch.einsum("bphk,bphk->hbp", base.z[layer][:, p] - z_abl[:, p], u_heads)


def neuron_directions(base: Baseline, w_outs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer ``[B, P, d_mlp]``: each neuron's direct logit contribution per unit of
    activation, ``W_out[n]·ũ / s_base`` (the baseline's scale)."""
    return [torch.einsum("bpd,nd->bpn", base.u, w) / base.s[..., None] for w in w_outs]


def ablate_layer(engine, base: Baseline, readout: NormReadout, layer: int, z_abl: torch.Tensor,
                 w_o: torch.Tensor, ndirs: list[torch.Tensor], top_mask: torch.Tensor | None = None,
                 neuron_acc: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Ablate each head of ``layer`` in turn, all heads as variants of one batch.

    Returns ``{de, te, self_repair, sr_norm, sr_attn, sr_mlp}``, each ``[H, B, P]``.
    ``neuron_acc`` (``[H, n_layers, d_mlp]``), if given, accumulates each neuron's change
    of direct contribution (ablated − clean) summed over the tokens in ``top_mask``
    (``[H, B, P]``, 1 for a head's top tokens).
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
        def fn(post):
            delta = post[:, p].float().reshape(n_heads, b, n_pos, -1) - base.post[lp][None]
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
    logit_abl = target_logit(engine, x_abl, targets)
    s_abl = readout.scale(x_abl)
    de = direct_effects(base, layer, w_o, z_abl)
    te = base.logit[None] - logit_abl
    sr = de - te
    sr_norm = (x_abl * base.u[None]).sum(-1) * (1.0 / s_abl - 1.0 / base.s[None])
    return {"de": de, "te": te, "self_repair": sr, "sr_norm": sr_norm,
            "sr_attn": sr - sr_norm - sr_mlp, "sr_mlp": sr_mlp}


# --------------------------------------------------------------------------------------
# The corpus: three streamed passes


def _batches(n_seq: int, batch_size: int) -> list[np.ndarray]:
    """Near-equal consecutive batches (resample ablation needs >= 2 sequences in each)."""
    n_batches = max(1, math.ceil(n_seq / batch_size))
    return [a for a in np.array_split(np.arange(n_seq), n_batches) if len(a)]


def corpus_mean_z(engine, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean of every head's hook_z over all corpus positions: ``[n_layers, H, d_head]``."""
    n = engine.n_layers
    total, count = None, 0
    for idx in _batches(tokens.shape[0], batch_size):
        z: dict = {}
        engine.baseline(tokens[idx].to(engine.device),
                        hooks=[(f"blocks.{L}.attn.hook_z", _capture(z, L)) for L in range(n)])
        s = torch.stack([z[L].sum((0, 1)) for L in range(n)])
        total = s if total is None else total + s
        count += z[0].shape[0] * z[0].shape[1]
    return total / count


@dataclass
class SelfRepairResult:
    tokens: pd.DataFrame      # one row per (head, token): TOKEN_COLUMNS
    heads: pd.DataFrame       # one row per head: summarise_heads
    neurons: pd.DataFrame     # top-k anti-erasure neurons per head


def run_self_repair(engine, tokens: torch.Tensor, first: int = 1, *, ablation: str = "mean",
                    target: str = "top1", top_fraction: float = 0.02, n_top_neurons: int = 10,
                    batch_size: int = 4, progress: bool = True) -> SelfRepairResult:
    """Every head of every layer, over ``tokens`` ([n_seq, seq_len]); ``first`` is the first
    scored position. See the module docstring for the definitions."""
    from tqdm.auto import tqdm

    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r}: use one of {', '.join(ABLATIONS)}.")
    n, n_heads = engine.n_layers, engine.n_heads
    device = engine.device
    batches = _batches(tokens.shape[0], batch_size)
    with torch.inference_mode():
        w_os = [head_out_weights(engine, L).to(device) for L in range(n)]
        w_outs = [mlp_out_weights(engine, L).contiguous().to(device) for L in range(n)]  # [d_mlp, d]
        mean_z = corpus_mean_z(engine, tokens, batch_size) if ablation == "mean" else None

        # pass 1: every head's direct effect (cheap: baselines only) -> its top tokens
        readout = None
        des = []
        for idx in batches:
            base, readout = run_baseline(engine, tokens[idx].to(device), first, target, readout,
                                         with_post=False)
            des.append(torch.stack([direct_effects(base, L, w_os[L], ablated_z(base, L, ablation, mean_z))
                                    for L in range(n)]).cpu())  # [N, H, B, P]
        de_all = torch.cat(des, dim=2)  # [N, H, n_seq, P]
        n_tok = de_all.shape[2] * de_all.shape[3]
        k = max(1, int(round(top_fraction * n_tok)))
        thresholds = de_all.flatten(2).topk(k, dim=-1).values[..., -1]  # [N, H]
        log.info("%d scored tokens per head; top %d (%.3g) by direct effect", n_tok, k, top_fraction)

        # pass 2: the ablations, one batch of H variants per (batch, layer)
        n_seq, n_pos = de_all.shape[2], de_all.shape[3]
        out = {name: np.empty((n, n_heads, n_seq, n_pos), dtype=np.float32)
               for name in ("de", "te", "self_repair", "sr_norm", "sr_attn", "sr_mlp")}
        targets = np.empty((n_seq, n_pos), dtype=np.int64)
        d_mlp = w_outs[0].shape[0]
        neuron_acc = torch.zeros(n, n_heads, n, d_mlp, device=device)
        bar = tqdm(total=len(batches) * n, desc=f"self-repair {n}x{n_heads} heads", unit="layer",
                   disable=not progress)
        for idx in batches:
            base, readout = run_baseline(engine, tokens[idx].to(device), first, target, readout)
            targets[idx] = base.targets.cpu().numpy()
            ndirs = neuron_directions(base, w_outs)
            for L in range(n):
                de_batch = de_all[L][:, idx].to(device)
                top_mask = (de_batch >= thresholds[L].to(device)[:, None, None]).float()
                res = ablate_layer(engine, base, readout, L, ablated_z(base, L, ablation, mean_z),
                                   w_os[L], ndirs, top_mask, neuron_acc[L])
                for name, value in res.items():
                    out[name][L][:, idx] = value.cpu().numpy()
                bar.update(1)
            del base, ndirs
            engine.calls = []  # free the last batch's recorded block calls
        bar.close()
        neuron_acc = neuron_acc.cpu()

    tokens_df = token_table(out, targets, thresholds.numpy(), first)
    heads_df = summarise_heads(tokens_df, n)
    neurons_df = anti_erasure_neurons(neuron_acc, heads_df, n_top_neurons)
    log.info("final norm: %s", readout.kind)
    return SelfRepairResult(tokens=tokens_df, heads=heads_df, neurons=neurons_df)


def self_repair_study(engine, tokens: torch.Tensor, first: int, model: str, settings: dict,
                      progress: bool = True) -> SelfRepairResult:
    """The ``self_repair`` rule's tables for one model: the first ``settings["n_sequences"]``
    x ``settings["seq_len"]`` corpus tokens, every head ablated (:func:`run_self_repair`
    with the section's ``ablation``, ``target``, ``top_fraction``, ``n_top_neurons``,
    ``batch_size``); every table gets the ``model`` as its first column, the per-head table
    also ``n_layers``, ``ablation`` and ``target`` as its last."""
    import time

    tokens = tokens[: settings["n_sequences"], : settings["seq_len"]]
    log.info("%s: self-repair of %d x %d heads on %d x %d tokens (%s ablation, %s target)",
             model, engine.n_layers, engine.n_heads, *tokens.shape, settings["ablation"], settings["target"])
    t0 = time.perf_counter()
    res = run_self_repair(engine, tokens, first, ablation=settings["ablation"], target=settings["target"],
                          top_fraction=settings["top_fraction"], n_top_neurons=settings["n_top_neurons"],
                          batch_size=settings["batch_size"], progress=progress)
    log.info("all heads took %.1f s", time.perf_counter() - t0)
    for df in (res.heads, res.tokens, res.neurons):
        df.insert(0, "model", model)
    res.heads["n_layers"] = engine.n_layers
    res.heads["ablation"] = settings["ablation"]
    res.heads["target"] = settings["target"]
    h = res.heads
    log.info("%s: %d of %d heads repair more than half their direct effect (top tokens); median "
             "final-norm share of DE %.3f (clipped per token), of the repair %.3f",
             model, int(((h.self_repair > h.de / 2) & (h.de > 0)).sum()), len(h),
             h.norm_pct_de.median(), h.norm_share.median())
    return res


# --------------------------------------------------------------------------------------
# Tables


def token_table(out: dict, targets: np.ndarray, thresholds: np.ndarray, first: int) -> pd.DataFrame:
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
    for name in ("de", "te", "self_repair", "sr_norm", "sr_attn", "sr_mlp"):
        df[name] = out[name].ravel()
    df["top"] = out["de"].ravel() >= np.broadcast_to(thresholds[:, :, None, None], out["de"].shape).ravel()
    return df


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _ratio(a, b):
    return float(a / b) if b != 0 else float("nan")


def summarise_heads(tokens_df: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """One row per head. Means over the head's top tokens (``de``, ``te``, ``self_repair``,
    ``sr_norm``, ``sr_attn``, ``sr_mlp``) and over all tokens (``*_all``); ratios of the top
    means: ``repair_frac`` = SR/DE, ``norm_frac_de`` = SR_norm/DE, ``norm_share`` =
    SR_norm/SR; the authors' clipped per-token percentages averaged over the top tokens
    (``norm_pct_de`` = mean clip(SR_norm/DE, 0, 1), ``repair_pct_de`` likewise); the spread
    of the per-token SR/DE over the top tokens (``ratio_q10/q50/q90``) and the fractions of
    top tokens that over-correct (SR > DE) or anti-repair (SR < 0)."""
    rows = []
    cols = ("de", "te", "self_repair", "sr_norm", "sr_attn", "sr_mlp")
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
