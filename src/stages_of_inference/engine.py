"""The drop/swap sweep engine: prefix caching, block replay, batched on-device metrics.

One baseline forward pass per batch records, with a forward pre-hook
(``with_kwargs=True``) on every transformer block, the exact call each block received:
the residual stream entering it plus the position embeddings, masks and the like. An
intervention at layer L leaves blocks 0..L-1 untouched, so it starts from the recorded
residual entering L and replays only the blocks it needs, in its own order:

* ``drop L``: blocks L+1, ..., N-1 (block L is skipped: the residual passes unchanged);
* ``swap L``: blocks L+1, L, L+2, ..., N-1 (blocks L and L+1 exchange positions).

Each block is called with its own recorded keyword arguments, so a block keeps its own
attention type when it moves. No weights are copied or reloaded; the whole sweep over
2N-1 interventions costs about N forward passes instead of 2N.

Which modules run (``attn_implementation``):

* ``"sdpa"`` (default) or ``"eager"``: the plain ``transformers`` modules with that
  attention implementation. Given a ``TransformerBridge``, the engine unwraps it into a
  plain module tree that *shares* the bridge's parameters (no copy): TransformerLens
  boots with eager attention and wraps every linear map and norm in a hook point, which
  the sweep does not need. Given a ``transformers`` model, it is used directly (a
  parameter-sharing clone only if its attention implementation differs).
* ``"bridge"``: the ``TransformerBridge``'s own blocks, hooks and all (slowest).

Metrics stay on the device: each batch's interventions fill one tensor, copied to the
host once per batch; per-token rows are assembled in bulk with numpy.
"""
from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from .metrics import (
    BASE_COLUMNS,
    INTERVENTION_COLUMNS,
    METRIC_COLUMNS,
    Reference,
    metrics_kernel,
    metrics_kernel_blocked,
)

log = logging.getLogger(__name__)

KINDS = ("drop", "swap")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "bridge")


def layers_for(kind: str, n_layers: int) -> list[int]:
    """Valid intervention layers: drop 0..N-1, swap 0..N-2 (L swaps with L+1)."""
    if kind == "drop":
        return list(range(n_layers))
    if kind == "swap":
        return list(range(n_layers - 1))
    raise ValueError(f"Unknown intervention kind {kind!r}; use one of {', '.join(KINDS)}.")


def block_order(kind: str, layer: int, n_layers: int) -> list[int]:
    """Blocks run after the untouched prefix 0..layer-1, in order."""
    if layer not in layers_for(kind, n_layers):
        raise ValueError(f"{kind} at layer {layer} is out of range for a {n_layers}-layer model.")
    if kind == "drop":
        return list(range(layer + 1, n_layers))
    return [layer + 1, layer] + list(range(layer + 2, n_layers))


# --------------------------------------------------------------------------------------
# The modules that run: a bridge's own blocks, or a plain transformers module tree


def is_bridge(model) -> bool:
    return hasattr(model, "original_model") and hasattr(model, "blocks")


def _unwrapped(module):
    """The transformers module a TransformerLens bridge component wraps (itself if none)."""
    while "_original_component" in getattr(module, "_modules", {}) and type(module).__module__.startswith(
        "transformer_lens"
    ):
        module = module._modules["_original_component"]
    return module


def plain_model(model, attn_implementation: str = "sdpa"):
    """A plain ``transformers`` model for the sweep, sharing ``model``'s parameters.

    ``model`` is a ``TransformerBridge`` (its bridge components are unwrapped) or a
    ``transformers`` model. The result is a shallow clone of the module tree: new module
    objects and a new config (so the attention implementation can differ), the very same
    parameter and buffer tensors. Nothing is copied on the device.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation {attn_implementation!r}: use sdpa or eager here.")
    root = model.original_model if is_bridge(model) else model
    if not is_bridge(model) and getattr(root.config, "_attn_implementation", None) == attn_implementation:
        return root
    old_config = root.config
    config = copy.deepcopy(old_config)
    config._attn_implementation = attn_implementation
    memo: dict[int, torch.nn.Module] = {}

    def clone(module):
        module = _unwrapped(module)
        if id(module) in memo:
            return memo[id(module)]
        new = copy.copy(module)
        memo[id(module)] = new
        state = new.__dict__
        for key, value in list(state.items()):
            if "hooks" in key and isinstance(value, dict):
                state[key] = type(value)()  # hooks on the clone never fire on the original
            elif value is old_config:
                state[key] = config
        state["_parameters"] = dict(module._parameters)
        state["_buffers"] = dict(module._buffers)
        state["_modules"] = {k: (None if m is None else clone(m)) for k, m in module._modules.items()}
        return new

    plain = clone(root)
    plain.eval()
    return plain


def _decoder_layers(model) -> torch.nn.ModuleList:
    n = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList) and (n is None or len(layers) == n):
            return layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"Cannot find the decoder layers of {type(model).__name__}.")


def _final_norm(model):
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"Cannot find the final norm of {type(model).__name__}.")


@dataclass
class BlockCall:
    args: tuple
    kwargs: dict

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def replay(self, block, hidden: torch.Tensor) -> torch.Tensor:
        if self.args:
            out = block(hidden, *self.args[1:], **self.kwargs)
        else:
            out = block(**{**self.kwargs, "hidden_states": hidden})
        return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class Sweep:
    """Runs interventions on one model without rebuilding it.

    ``bridge`` is a ``TransformerBridge`` or a ``transformers`` causal LM;
    ``attn_implementation`` picks the modules that run (module docstring).
    """

    bridge: object
    attn_implementation: str = "sdpa"
    calls: list[BlockCall] = field(default_factory=list)

    def __post_init__(self):
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation is {self.attn_implementation!r}; use one of "
                f"{', '.join(ATTN_IMPLEMENTATIONS)}."
            )
        if self.attn_implementation == "bridge":
            if not is_bridge(self.bridge):
                raise ValueError("attn_implementation 'bridge' needs a TransformerBridge.")
            self.model = self.bridge.original_model
            self.blocks = list(self.bridge.blocks)
            self._norm, self._head = self.bridge.ln_final, self.bridge.unembed
        else:
            self.model = plain_model(self.bridge, self.attn_implementation)
            self.blocks = list(_decoder_layers(self.model))
            self._norm, self._head = _final_norm(self.model), self.model.get_output_embeddings()
        self.n_layers = len(self.blocks)
        self.checked = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- baseline ---------------------------------------------------------------------
    def baseline(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full forward pass; records every block's call. Returns logits [B, T, V]."""
        calls: list[BlockCall | None] = [None] * self.n_layers
        last: list[torch.Tensor] = []

        def make_hook(i):
            def hook(module, args, kwargs):
                calls[i] = BlockCall(tuple(args), dict(kwargs))

            return hook

        def last_hook(module, args, output):
            last.append(output[0] if isinstance(output, (tuple, list)) else output)

        handles = [
            block.register_forward_pre_hook(make_hook(i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
        ]
        if not self.checked:
            handles.append(self.blocks[-1].register_forward_hook(last_hook))
        try:
            out = self.model(input_ids=input_ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if any(c is None for c in calls):
            raise RuntimeError("Some blocks were not called during the baseline pass.")
        self.calls = calls  # type: ignore[assignment]
        logits = out.logits
        if not self.checked:
            self._check_unembed(last[-1], logits)
        return logits

    def _check_unembed(self, hidden, logits):
        """Once per sweep: norm + unembedding of the last block's output == the model's
        logits, i.e. the engine's head is the model's head (no missing scale or cap)."""
        with torch.no_grad():
            got = self.unembed(hidden)
        scale = logits.detach().abs().max().clamp(min=1.0)
        tol = 1e-3 if logits.dtype == torch.float32 else 5e-2
        if not torch.allclose(got.float(), logits.float(), atol=float(tol * scale), rtol=0):
            raise RuntimeError(
                f"{type(self.model).__name__}: final norm + unembedding does not reproduce the "
                f"model's logits; the sweep engine does not support this architecture's head."
            )
        self.checked = True

    # -- interventions ----------------------------------------------------------------
    def residual_in(self, layer: int) -> torch.Tensor:
        return self.calls[layer].hidden

    def run_from(self, start: int, order: Sequence[int], positions: slice = slice(None)):
        """Logits after running ``order`` on the residual entering block ``start``."""
        hidden = self.residual_in(start)
        for j in order:
            hidden = self.calls[j].replay(self.blocks[j], hidden)
        return self.unembed(hidden[:, positions])

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(self._norm(hidden))

    def intervene(self, kind: str, layer: int, positions: slice = slice(None)) -> torch.Tensor:
        return self.run_from(layer, block_order(kind, layer, self.n_layers), positions)


def _targets(input_ids: torch.Tensor, first: int):
    """Next-token targets for positions ``first..T-1`` and where they exist."""
    targets = torch.full_like(input_ids, -1)
    targets[:, :-1] = input_ids[:, 1:]
    targets = targets[:, first:]
    return targets, targets >= 0


def sweep_batch_tensor(sweep: Sweep, input_ids, jobs: Sequence[tuple[str, int]], first: int = 1, kernel=None):
    """Baseline + every (kind, layer) in ``jobs`` on one batch, all on the device.

    Returns ``(base [len(BASE_COLUMNS), B, T-first], out [len(jobs),
    len(INTERVENTION_COLUMNS), B, T-first])``, float32. Nothing is synchronised or copied
    to the host: the device runs ahead of Python.
    """
    kernel = kernel or metrics_kernel
    positions = slice(first, None)
    logits = sweep.baseline(input_ids)[:, positions]
    targets, has_target = _targets(input_ids, first)
    ref = Reference.from_logits(logits, targets, has_target)
    del logits
    base = torch.stack([ref.entropy, ref.loss, ref.correct])
    out = torch.empty(
        (len(jobs), len(INTERVENTION_COLUMNS), *targets.shape), dtype=torch.float32, device=input_ids.device
    )
    for j, (kind, layer) in enumerate(jobs):
        out[j] = kernel(
            sweep.intervene(kind, layer, positions), ref.p, ref.neg_entropy_nats, ref.argmax,
            ref.safe_targets, has_target,
        )
    return base, out


def sweep_batch(sweep: Sweep, input_ids, jobs: Iterable[tuple[str, int]], first: int = 1):
    """Baseline + every (kind, layer) in ``jobs`` on one batch.

    Returns ``{(kind, layer): {metric: tensor [B, T-first]}}`` on the device.
    """
    jobs = list(jobs)
    base, out = sweep_batch_tensor(sweep, input_ids, jobs, first)
    return {job: _columns(base, out[j]) for j, job in enumerate(jobs)}


def _columns(base, values) -> dict:
    """All METRIC_COLUMNS from the base and one intervention's metrics (tensors or arrays)."""
    b = dict(zip(BASE_COLUMNS, base))
    v = dict(zip(INTERVENTION_COLUMNS, values))
    cols = {
        "kl": v["kl"],
        "top1_agree": v["top1_agree"],
        "entropy_base": b["entropy_base"],
        "entropy": v["entropy"],
        "entropy_change": v["entropy"] - b["entropy_base"],
        "loss_base": b["loss_base"],
        "loss": v["loss"],
        "loss_change": v["loss"] - b["loss_base"],
        "correct_base": b["correct_base"],
        "correct": v["correct"],
    }
    return {name: cols[name] for name in METRIC_COLUMNS}


def compiled_kernel():
    """``metrics_kernel`` through ``torch.compile``: one fused pass over the vocabulary
    instead of several (log_softmax, exp, products and sums are memory-bound). Falls back
    to the eager kernel, with a warning, if compilation fails (e.g. no Triton)."""
    compiled = torch.compile(metrics_kernel, dynamic=None)
    state = {"fn": compiled}

    def kernel(*args):
        if state["fn"] is compiled:
            try:
                return compiled(*args)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # pragma: no cover - depends on the toolchain
                log.warning("torch.compile of the metrics failed (%s); using the eager kernel", exc)
                state["fn"] = metrics_kernel
        return state["fn"](*args)

    return kernel


def resolve_compile(compile, device) -> bool:
    """``compile`` is True, False or "auto" (compile on CUDA, where the fused metrics save
    most of their memory traffic and Triton is there; not on the CPU, where compiling
    costs more than it saves in a job)."""
    if compile == "auto":
        return torch.device(device).type == "cuda"
    return bool(compile)


def run_sweep(
    bridge,
    tokens: torch.Tensor,
    jobs: Sequence[tuple[str, int]],
    *,
    batch_size: int = 8,
    first: int = 1,
    progress: bool = True,
    attn_implementation: str = "sdpa",
    compile: bool | str = False,
    sweep: Sweep | None = None,
):
    """Stream the corpus through the sweep; return a tidy per-token ``DataFrame``.

    ``bridge`` is a ``TransformerBridge`` or a ``transformers`` causal LM. ``first`` is
    the first scored position (1 skips BOS). Memory is bounded by one batch. Per batch:
    one baseline pass, the interventions, one device-to-host copy. On CUDA out-of-memory
    the batch size is halved and the batch retried (and kept for the batches after).
    ``compile`` (True, False or "auto": on CUDA only) fuses the per-token metrics.
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    jobs = list(jobs)
    if sweep is None:
        sweep = Sweep(bridge, attn_implementation=attn_implementation)
    device = sweep.device
    if resolve_compile(compile, device):
        kernel = compiled_kernel()
    else:  # on the CPU, cache-sized blocks of tokens; on a GPU, whole tensors
        kernel = metrics_kernel_blocked if device.type == "cpu" else metrics_kernel
    n_seq, seq_len = tokens.shape
    n_pos = seq_len - first
    # host buffers: [metric, job, seq, pos] so that every column is one contiguous view
    host_base = np.empty((len(BASE_COLUMNS), n_seq, n_pos), dtype=np.float32)
    host = np.empty((len(INTERVENTION_COLUMNS), len(jobs), n_seq, n_pos), dtype=np.float32)
    bar = tqdm(total=n_seq, desc=f"sweep {len(jobs)} interventions", unit="seq", disable=not progress)
    start = 0
    while start < n_seq:
        stop = min(start + batch_size, n_seq)
        oom = False
        try:
            with torch.inference_mode():
                base, out = sweep_batch_tensor(sweep, tokens[start:stop].to(device), jobs, first, kernel)
                # the one device->host copy of this batch
                both = torch.cat([base.reshape(-1), out.transpose(0, 1).reshape(-1)]).cpu().numpy()
        except torch.OutOfMemoryError:
            oom = True  # recover outside the except block, so the traceback's tensors are freed
        sweep.calls = []
        if oom:
            base = out = None
            if batch_size == 1:
                raise torch.OutOfMemoryError("CUDA out of memory with batch_size=1.")
            batch_size = max(1, batch_size // 2)
            gc.collect()
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with batch_size=%d", batch_size)
            continue
        nb = base.numel()
        host_base[:, start:stop] = both[:nb].reshape(len(BASE_COLUMNS), stop - start, n_pos)
        host[:, :, start:stop] = both[nb:].reshape(len(INTERVENTION_COLUMNS), len(jobs), stop - start, n_pos)
        bar.update(stop - start)
        start = stop
    bar.close()
    sweep.final_batch_size = batch_size

    n_rows = len(jobs) * n_seq * n_pos
    frame = {
        "kind": pd.Categorical.from_codes(
            np.repeat(np.array([KINDS.index(k) for k, _ in jobs], dtype=np.int8), n_seq * n_pos),
            categories=list(KINDS),
        ),
        "layer": np.repeat(np.array([layer for _, layer in jobs], dtype=np.int32), n_seq * n_pos),
        "seq": np.tile(np.repeat(np.arange(n_seq, dtype=np.int32), n_pos), len(jobs)),
        "pos": np.tile(np.arange(first, seq_len, dtype=np.int32), len(jobs) * n_seq),
    }
    base_b = host_base[:, None]  # broadcast over jobs
    cols = _columns(base_b, host)
    for name in METRIC_COLUMNS:
        col = cols[name]
        if col.shape[0] != len(jobs):
            col = np.broadcast_to(col, host.shape[1:])
        frame[name] = np.ascontiguousarray(col).reshape(n_rows)
    df = pd.DataFrame(frame, copy=False)
    df["kind"] = df["kind"].cat.remove_unused_categories()
    return df
