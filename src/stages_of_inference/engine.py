"""The drop/swap sweep engine: prefix caching, block replay, batched metrics.

One baseline forward pass per batch records, with a forward pre-hook
(``with_kwargs=True``) on every block of the ``TransformerBridge``, the exact call each
block received: the residual stream entering it plus the position embeddings, masks and
the like. An intervention at layer L leaves blocks 0..L-1 untouched, so it starts from the
recorded residual entering L and replays only the blocks it needs, in its own order:

* ``drop L``: blocks L+1, ..., N-1 (block L is skipped: the residual passes unchanged);
* ``swap L``: blocks L+1, L, L+2, ..., N-1 (blocks L and L+1 exchange positions).

Each block is called with its own recorded keyword arguments, so a block keeps its own
attention type when it moves. The final norm and unembedding are the bridge's own
``ln_final`` and ``unembed``. No weights are copied or reloaded; the whole sweep over
2N-1 interventions costs about N forward passes instead of 2N.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from .metrics import Reference, compare

log = logging.getLogger(__name__)

KINDS = ("drop", "swap")


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
    """Runs interventions on a ``TransformerBridge`` without rebuilding it."""

    bridge: object
    calls: list[BlockCall] = field(default_factory=list)

    def __post_init__(self):
        self.blocks = list(self.bridge.blocks)
        self.n_layers = len(self.blocks)

    # -- baseline ---------------------------------------------------------------------
    def baseline(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full forward pass; records every block's call. Returns logits [B, T, V]."""
        calls: list[BlockCall | None] = [None] * self.n_layers

        def make_hook(i):
            def hook(module, args, kwargs):
                calls[i] = BlockCall(tuple(args), dict(kwargs))

            return hook

        handles = [
            block.register_forward_pre_hook(make_hook(i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
        ]
        try:
            out = self.bridge.original_model(input_ids=input_ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if any(c is None for c in calls):
            raise RuntimeError("Some blocks were not called during the baseline pass.")
        self.calls = calls  # type: ignore[assignment]
        return out.logits

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
        return self.bridge.unembed(self.bridge.ln_final(hidden))

    def intervene(self, kind: str, layer: int, positions: slice = slice(None)) -> torch.Tensor:
        return self.run_from(layer, block_order(kind, layer, self.n_layers), positions)


def _targets(input_ids: torch.Tensor, first: int):
    """Next-token targets for positions ``first..T-1`` and where they exist."""
    targets = torch.full_like(input_ids, -1)
    targets[:, :-1] = input_ids[:, 1:]
    targets = targets[:, first:]
    return targets, targets >= 0


def sweep_batch(sweep: Sweep, input_ids, jobs: Iterable[tuple[str, int]], first: int = 1):
    """Baseline + every (kind, layer) in ``jobs`` on one batch.

    Returns ``{(kind, layer): {metric: tensor [B, T-first]}}`` on the device.
    """
    positions = slice(first, None)
    logits = sweep.baseline(input_ids)[:, positions]
    targets, has_target = _targets(input_ids, first)
    ref = Reference.from_logits(logits, targets, has_target)
    del logits
    out = {}
    for kind, layer in jobs:
        out[(kind, layer)] = compare(ref, sweep.intervene(kind, layer, positions), targets, has_target)
    return out


def run_sweep(
    bridge,
    tokens: torch.Tensor,
    jobs: Sequence[tuple[str, int]],
    *,
    batch_size: int = 8,
    first: int = 1,
    progress: bool = True,
):
    """Stream the corpus through the sweep; return a tidy per-token ``DataFrame``.

    ``first`` is the first scored position (1 skips BOS). On CUDA out-of-memory the batch
    size is halved and the batch retried.
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    device = next(bridge.original_model.parameters()).device
    sweep = Sweep(bridge)
    n_seq, seq_len = tokens.shape
    n_pos = seq_len - first
    results = {job: {} for job in jobs}
    chunks: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {job: [] for job in jobs}
    bar = tqdm(total=n_seq, desc=f"sweep {len(jobs)} interventions", unit="seq", disable=not progress)
    start = 0
    while start < n_seq:
        stop = min(start + batch_size, n_seq)
        batch = tokens[start:stop].to(device)
        try:
            with torch.inference_mode():
                metrics = sweep_batch(sweep, batch, jobs, first)
        except torch.OutOfMemoryError:
            sweep.calls = []
            if batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with batch_size=%d", batch_size)
            continue
        for job, values in metrics.items():
            # one device->host copy per intervention and batch
            stacked = torch.stack(list(values.values())).float().cpu().numpy()
            chunks[job].append(dict(zip(values.keys(), stacked)))
        sweep.calls = []
        bar.update(stop - start)
        start = stop
    bar.close()

    frames = []
    seq_idx = np.repeat(np.arange(n_seq, dtype=np.int32), n_pos)
    pos_idx = np.tile(np.arange(first, seq_len, dtype=np.int32), n_seq)
    for kind, layer in jobs:
        parts = chunks[(kind, layer)]
        cols = {name: np.concatenate([p[name] for p in parts]).reshape(-1) for name in parts[0]}
        frame = pd.DataFrame(cols)
        frame.insert(0, "pos", pos_idx)
        frame.insert(0, "seq", seq_idx)
        frame.insert(0, "layer", np.int32(layer))
        frame.insert(0, "kind", kind)
        frames.append(frame)
    del results
    df = pd.concat(frames, ignore_index=True)
    df["kind"] = df["kind"].astype("category")
    return df
