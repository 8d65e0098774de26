"""The robustness study's computations (Figure 3, the robustness table): the drop/swap
sweep over the core engine with per-token metrics on the device, chunks of layers for
the workflow's jobs, and the accuracy-retained table.

Per batch: one baseline pass (the engine records every block's call), then every
(kind, layer) of the job from the cached residual, the metrics of all of them in one
device tensor, one host copy.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import pandas as pd
import torch

from ..core.engine import KINDS, Engine, batched
from ..core.metrics import (
    BASE_COLUMNS,
    INTERVENTION_COLUMNS,
    METRIC_COLUMNS,
    Reference,
    metrics_kernel,
    metrics_kernel_blocked,
)

log = logging.getLogger(__name__)


# -- the sweep ----------------------------------------------------------------------------


def _targets(input_ids: torch.Tensor, first: int):
    """Next-token targets for positions ``first..T-1`` and where they exist."""
    targets = torch.full_like(input_ids, -1)
    targets[:, :-1] = input_ids[:, 1:]
    targets = targets[:, first:]
    return targets, targets >= 0


def sweep_batch_tensor(sweep: Engine, input_ids, jobs: Sequence[tuple[str, int]], first: int = 1, kernel=None):
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


def sweep_batch(sweep: Engine, input_ids, jobs: Iterable[tuple[str, int]], first: int = 1):
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
            except Exception as exc:  # noqa: BLE001  # pragma: no cover - torch.compile raises many kinds
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
    engine: Engine,
    ids: torch.Tensor,
    jobs: Sequence[tuple[str, int]],
    *,
    batch_size: int = 8,
    first: int = 1,
    progress: bool = True,
    compile: bool | str = False,
):
    """Stream the corpus token ids ``ids`` through the sweep; a tidy per-token ``DataFrame``.

    ``engine`` is a :class:`~stages_of_inference.core.engine.Engine` (a ``transformers``
    model is wrapped in one). ``first`` is the first scored position (1 skips BOS). Memory
    is bounded by one batch. Per batch: one baseline pass, the interventions, one
    device-to-host copy. Out-of-memory: :func:`~stages_of_inference.core.engine.batched`.
    ``compile`` (True, False or "auto": on CUDA only) fuses the per-token metrics.
    """
    import numpy as np
    from tqdm.auto import tqdm

    jobs = list(jobs)
    if not isinstance(engine, Engine):
        engine = Engine(engine)
    device = engine.device
    if resolve_compile(compile, device):
        kernel = compiled_kernel()
    else:  # on the CPU, cache-sized blocks of tokens; on a GPU, whole tensors
        kernel = metrics_kernel_blocked if device.type == "cpu" else metrics_kernel
    n_seq, seq_len = ids.shape
    n_pos = seq_len - first
    # host buffers: [metric, job, seq, pos] so that every column is one contiguous view
    host_base = np.empty((len(BASE_COLUMNS), n_seq, n_pos), dtype=np.float32)
    host = np.empty((len(INTERVENTION_COLUMNS), len(jobs), n_seq, n_pos), dtype=np.float32)

    def one_batch(start, stop):
        try:
            with torch.inference_mode():
                base, out = sweep_batch_tensor(engine, ids[start:stop].to(device), jobs, first, kernel)
                # the one device->host copy of this batch
                both = torch.cat([base.reshape(-1), out.transpose(0, 1).reshape(-1)]).cpu().numpy()
        finally:
            engine.calls = []
        nb = base.numel()
        host_base[:, start:stop] = both[:nb].reshape(len(BASE_COLUMNS), stop - start, n_pos)
        host[:, :, start:stop] = both[nb:].reshape(len(INTERVENTION_COLUMNS), len(jobs), stop - start, n_pos)

    bar = tqdm(total=n_seq, desc=f"sweep {len(jobs)} interventions", unit="seq", disable=not progress)
    batched(n_seq, batch_size, one_batch, progress=bar)
    bar.close()
    engine.final_batch_size = batched.last_batch_size

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


def summarise_interventions(df: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """Per (model, kind, layer): mean and standard error of every metric over tokens, with
    ``n_layers`` and relative depth."""
    from ..core.metrics import rel_depth, summarise

    df["kind"] = df["kind"].astype("category")
    summary = summarise(df)
    summary["n_layers"] = n_layers
    summary["rel_depth"] = rel_depth(summary["layer"], n_layers)
    return summary


# -- the robustness table -------------------------------------------------------------------


def interior(summary: pd.DataFrame) -> pd.Series:
    """Rows whose intervention touches neither the first nor the last block.

    drop L touches block L; swap L touches blocks L and L+1.
    """
    last = summary["n_layers"] - 1
    touched_last = summary["layer"] + (summary["kind"].astype(str) == "swap").astype(int)
    return (summary["layer"] > 0) & (touched_last < last)


def robustness(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model and kind: accuracy retained = accuracy_intervened / accuracy_base,
    averaged over the interior interventions (FIGURES.md, headline table). Undefined (NaN) where
    the unmodified model predicts no token right (a random-weight control): there is no
    accuracy to retain."""
    df = summary[interior(summary)].copy()
    base = df["correct_base_mean"].astype(float)
    df["retained"] = (df["correct_mean"] / base).where(base > 0)
    rows = []
    for (model, kind), g in df.groupby(["model", "kind"], observed=True, sort=True):
        rows.append(
            {
                "model": model,
                "intervention": str(kind),
                "layers_used": len(g),
                "accuracy_base": g["correct_base_mean"].mean(),
                "accuracy_intervened": g["correct_mean"].mean(),
                "retained_mean": g["retained"].mean(),
                "retained_min": g["retained"].min(),
                "retained_max": g["retained"].max(),
            }
        )
    return pd.DataFrame(rows)
