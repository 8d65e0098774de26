"""Independent computations for the layer-edits tests: plain ``transformers`` models whose
layer list is edited by hand (Gemma's ``config.layer_types`` following the blocks), hooks
placed by hand, hand formulas. Nothing here imports the engine."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import torch

import conftest

NORM_NAMES = ("norm", "ln_f", "final_layer_norm")


def deeper_model(arch, tokenizer, n_layers=6, seed=0):
    """conftest's tiny model with ``n_layers`` blocks (Gemma: a full-attention block every
    third, the rest sliding-window)."""
    saved = conftest.TINY[arch]
    extra = {"n_layer" if arch == "gpt2" else "num_hidden_layers": n_layers}
    if arch.startswith("gemma"):
        extra["layer_types"] = ["full_attention" if i % 3 == 2 else "sliding_attention" for i in range(n_layers)]
    conftest.TINY[arch] = {**saved, **extra}
    try:
        return conftest.tiny_hf_model(arch, tokenizer, seed=seed)
    finally:
        conftest.TINY[arch] = saved


def decoder(model):
    base = model.base_model
    return (base, "h") if hasattr(base, "h") else (base, "layers")


def final_norm(model):
    base = model.base_model
    for name in NORM_NAMES:
        if isinstance(getattr(base, name, None), torch.nn.Module):
            return getattr(base, name)
    raise AssertionError(type(model))


def edited_model(hf, blocks, follow_types=True):
    """A deep copy of ``hf`` whose decoder runs ``blocks`` (repeats share weights)."""
    model = copy.deepcopy(hf)
    base, name = decoder(model)
    layers = getattr(base, name)
    setattr(base, name, torch.nn.ModuleList([layers[i] for i in blocks]))
    model.config.num_hidden_layers = len(blocks)
    if hasattr(model.config, "n_layer"):
        model.config.n_layer = len(blocks)
    if follow_types and getattr(model.config, "layer_types", None):
        model.config.layer_types = [hf.config.layer_types[i] for i in blocks]
    return model


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def block_input(hf, ids):
    """The residual entering block 0 (the embeddings as the model scales them)."""
    base, name = decoder(hf)
    seen = {}

    def pre(module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    handle = getattr(base, name)[0].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        hf(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return seen["x"]


def run_blocks(hf, ids, blocks, x_in):
    """The residual after ``blocks`` run on ``x_in`` (which replaces the input of the first
    of them), in a hand-edited model; the output is read by a hook on the last block."""
    model = edited_model(hf, blocks)
    base, name = decoder(model)
    layers = getattr(base, name)
    seen = {}

    def pre(module, args, kwargs):
        if args:
            return (x_in, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x_in}

    def post(module, args, output):
        seen["x"] = _first(output)

    handles = [layers[0].register_forward_pre_hook(pre, with_kwargs=True), layers[-1].register_forward_hook(post)]
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen["x"]


def logits_from(hf, ids, x):
    """The model's logits on the final residual ``x``: a hook replaces the final norm's input."""
    model = copy.deepcopy(hf)
    handle = final_norm(model).register_forward_pre_hook(lambda module, args: (x, *args[1:]))
    try:
        return model(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()


@torch.no_grad()
def hand_logits(hf, ids, order):
    """Logits of ``hf`` running ``order`` from block 0: ints are blocks; a tuple runs its
    blocks in parallel (each on the same residual, each in a model of its own, outputs
    averaged). Without tuples: one hand-edited layer list, nothing else."""
    if not any(isinstance(item, tuple) for item in order):
        return edited_model(hf, list(order))(input_ids=ids, use_cache=False).logits
    x = block_input(hf, ids)
    pending: list[int] = []
    for item in order:
        if isinstance(item, tuple):
            if pending:
                x = run_blocks(hf, ids, pending, x)
                pending = []
            x = torch.stack([run_blocks(hf, ids, [j], x) for j in item]).mean(0)
        else:
            pending.append(item)
    if pending:
        x = run_blocks(hf, ids, pending, x)
    return logits_from(hf, ids, x)


@torch.no_grad()
def hand_residuals(hf, ids):
    """``[N+1, B, T, d]``: the residual entering every block (HF ``hidden_states[0..N-1]``)
    and the last block's output, read by a hook: HF's ``hidden_states[N]`` is after the
    final norm. Also returns that normed last hidden state (the pitfall)."""
    base, name = decoder(hf)
    seen = {}
    handle = getattr(base, name)[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("x", _first(out)))
    try:
        out = hf(input_ids=ids, use_cache=False, output_hidden_states=True)
    finally:
        handle.remove()
    n = len(out.hidden_states) - 1
    return torch.stack([*out.hidden_states[:n], seen["x"]]), out.hidden_states[n]


def hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 - the paper's K and L
    """Unbiased HSIC as the U-statistic it is (Song et al. 2012, eq. 5): the mean over
    ordered 4-tuples of distinct samples (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq.
    No diagonal entry ever enters, so zeroing the diagonal changes nothing."""
    n = k.shape[0]
    t = np.array(list(itertools.permutations(range(n), 4)))
    i, j, q, r = t.T
    return float(np.mean(k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]))


def cka_by_hand(layers: list[np.ndarray]) -> np.ndarray:
    """CKA between layers from per-document features: ``layers[a][doc] [n, d]``; the HSIC
    of each pair averaged over documents (the fork's recipe), from the U-statistic."""
    n_layers, n_docs = len(layers), len(layers[0])
    h = np.zeros((n_layers, n_layers))
    for doc in range(n_docs):
        grams = [layers[a][doc] @ layers[a][doc].T for a in range(n_layers)]
        for a in range(n_layers):
            for b in range(n_layers):
                h[a, b] += hsic_u_statistic(grams[a], grams[b]) / n_docs
    d = np.sqrt(np.diag(h))
    return h / np.outer(d, d)
