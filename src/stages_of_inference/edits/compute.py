"""The layer-edits study's model run: every edit plan from the cached residual, the
per-token metrics of Figure 3 (the robustness study's kernel), and the residual-stream
statistics of the same baseline pass (CKA, Block Influence, angular distances).

Per batch: one baseline pass (``robustness.compute.sweep_batch_tensor``: the engine
records every block's call; the reference distribution once), then every plan as
``engine.run_from(plan.start, plan.order)`` with one unembedding each, the metrics of all
plans in one device tensor, one host copy. Windows of one block are the robustness
study's drops: they are read from its per-token table on the same tokens, never rerun.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.engine import Engine, batched, hook_name
from ..core.metrics import (
    BASE_COLUMNS,
    INTERVENTION_COLUMNS,
    METRIC_COLUMNS,
    metrics_kernel,
    metrics_kernel_blocked,
    rel_depth,
    summarise,
)
from ..robustness.compute import _columns, compiled_kernel, resolve_compile, sweep_batch_tensor
from .cka import CKAAccumulator, cka_table
from .plans import FAMILIES, KINDS, Plan, describe, edit_plans
from .predictors import ResidualStats, predictors_table, spearman_table
from .settings import EditSettings

log = logging.getLogger(__name__)

PARAM_COLUMNS = ("painters_start", "loops", "seed", "copies")
# per-token metrics that need the next token (NaN at a sequence's last position)
TARGET_COLUMNS = ("loss_base", "loss", "loss_change", "correct_base", "correct")


class PlanSweep:
    """``sweep_batch_tensor``'s sweep over edit plans: ``baseline`` is the engine's (it
    also keeps the last block's output, the final residual before the final norm) and
    job ``("plan", i)`` runs plan ``i`` from the cached residual."""

    def __init__(self, engine: Engine, plans: Sequence[Plan]):
        self.engine, self.plans = engine, list(plans)
        self.final = None

    def baseline(self, input_ids, hooks=(), positions=slice(None)):
        def keep(t):
            self.final = t.detach()

        last = hook_name(self.engine.n_layers - 1, "hook_resid_post")
        return self.engine.baseline(input_ids, [*hooks, (last, keep)], positions)

    def intervene(self, kind, index, positions=slice(None)):
        plan = self.plans[index]
        return self.engine.run_from(plan.start, plan.order, positions)

    def residuals(self, positions) -> torch.Tensor:
        """``[N+1, B, T, d]``: the residual entering every block and the final residual."""
        xs = [self.engine.residual_in(layer) for layer in range(self.engine.n_layers)] + [self.final]
        return torch.stack([x[:, positions] for x in xs])


@dataclass
class EditRun:
    tokens: pd.DataFrame  # per plan and scored token: METRIC_COLUMNS
    cka: torch.Tensor  # [N, N], residual after each block
    stats: ResidualStats
    documents: int
    positions: int


def run_plans(engine: Engine, ids: torch.Tensor, plans: Sequence[Plan], *, first: int = 1, batch_size: int = 2,
              compile: bool | str = False) -> EditRun:
    """Every plan on the token ids ``ids [S, T]`` (scored positions ``first..T-1``), in
    batches of sequences; the per-token metrics and the residual statistics."""
    plans = list(plans)
    device = engine.device
    if resolve_compile(compile, device):
        kernel = compiled_kernel()
    else:
        kernel = metrics_kernel_blocked if device.type == "cpu" else metrics_kernel
    n_seq, seq_len = ids.shape
    n_pos = seq_len - first
    host_base = np.empty((len(BASE_COLUMNS), n_seq, n_pos), dtype=np.float32)
    host = np.empty((len(INTERVENTION_COLUMNS), len(plans), n_seq, n_pos), dtype=np.float32)
    sweep = PlanSweep(engine, plans)
    gram = CKAAccumulator()
    stats = ResidualStats(engine.n_layers)
    positions = slice(first, None)

    def one_batch(start, stop):
        try:
            with torch.inference_mode():
                base, out = sweep_batch_tensor(sweep, ids[start:stop].to(device),
                                               [("plan", i) for i in range(len(plans))], first, kernel)
                xs = sweep.residuals(positions)
                gram.add(xs[1:])  # the residual after each block
                stats.add(xs)
                both = torch.cat([base.reshape(-1), out.transpose(0, 1).reshape(-1)]).cpu().numpy()
        finally:
            engine.calls, sweep.final = [], None
        nb = base.numel()
        host_base[:, start:stop] = both[:nb].reshape(len(BASE_COLUMNS), stop - start, n_pos)
        host[:, :, start:stop] = both[nb:].reshape(len(INTERVENTION_COLUMNS), len(plans), stop - start, n_pos)

    batched(n_seq, batch_size, one_batch)
    cols = _columns(host_base[:, None], host)
    frame = {"plan": np.repeat(np.arange(len(plans), dtype=np.int32), n_seq * n_pos),
             "seq": np.tile(np.repeat(np.arange(n_seq, dtype=np.int32), n_pos), len(plans)),
             "pos": np.tile(np.arange(first, seq_len, dtype=np.int32), len(plans) * n_seq)}
    for name in METRIC_COLUMNS:
        col = cols[name]
        if col.shape[0] != len(plans):
            col = np.broadcast_to(col, host.shape[1:])
        frame[name] = np.ascontiguousarray(col).reshape(-1)
    tokens = pd.DataFrame(frame)
    tokens["plan"] = pd.Categorical.from_codes(tokens["plan"], categories=[p.name for p in plans])
    return EditRun(tokens, gram.cka(), stats, n_seq, n_pos)


def plan_table(plans: Sequence[Plan], n_layers: int, source: str = "edits") -> pd.DataFrame:
    """One row per plan: family, kind, its parameters, the blocks the edited model runs,
    the edited range and its relative depth (``rel_depth``: the range's centre)."""
    rows = []
    for plan in plans:
        row = {"plan": plan.name, "family": plan.family, "kind": plan.kind, "first": plan.first,
               "last": plan.last, "width": plan.width}
        row.update({key: plan.params.get(key) for key in PARAM_COLUMNS})
        row.update({"blocks": describe(plan.full_order()), "block_calls": plan.block_calls(), "source": source})
        rows.append(row)
    df = pd.DataFrame(rows)
    for key in PARAM_COLUMNS:
        df[key] = df[key].astype("Int64")
    df["n_layers"] = n_layers
    df["rel_first"] = rel_depth(df["first"], n_layers)
    df["rel_last"] = rel_depth(df["last"], n_layers)
    df["rel_depth"] = (df["rel_first"] + df["rel_last"]) / 2
    return df


def drop_tokens(robustness_tokens: pd.DataFrame, n_layers: int, n_seq: int, seq_len: int, first: int) -> pd.DataFrame:
    """The robustness study's per-token drops as windows of one block, on the tokens of
    this study (the first ``n_seq`` sequences, positions ``first..seq_len-1``; at the last
    one, loss and accuracy are left out as in the study's own runs, which see no next
    token there)."""
    df = robustness_tokens
    df = df[(df["kind"].astype(str) == "drop") & (df["seq"] < n_seq) & (df["pos"] < seq_len)]
    expected = n_layers * n_seq * (seq_len - first)
    if len(df) != expected or df["layer"].nunique() != n_layers:
        raise ValueError(f"the robustness table has {len(df)} drop rows on these tokens ({df['layer'].nunique()} "
                         f"layers); {expected} expected ({n_layers} layers x {n_seq} x {seq_len - first} tokens).")
    names = {layer: Plan("window", "drop", layer, tuple(range(layer + 1, n_layers)), layer, layer).name
             for layer in range(n_layers)}
    out = df[["seq", "pos", *METRIC_COLUMNS]].copy()
    out.insert(0, "plan", df["layer"].map(names).to_numpy())
    # the study's last position has no next token among its tokens (the corpus may have one)
    out.loc[out["pos"] == seq_len - 1, list(TARGET_COLUMNS)] = np.nan
    return out.reset_index(drop=True)


@dataclass
class EditsResult:
    summary: pd.DataFrame
    tokens: pd.DataFrame
    cka: pd.DataFrame
    predictors: pd.DataFrame
    spearman: pd.DataFrame


def summarise_edits(tokens: pd.DataFrame, plans: pd.DataFrame) -> pd.DataFrame:
    """Mean and SE over tokens of every metric per plan, with the plan's description and
    ``accuracy_retained`` = edited / base accuracy."""
    df = tokens.copy()
    df["plan"] = df["plan"].astype(str)
    summary = summarise(df, by=("model", "plan"))
    summary = plans.merge(summary, on="plan", how="inner", validate="one_to_one")
    summary["accuracy_retained"] = summary["correct_mean"] / summary["correct_base_mean"]
    summary["family"] = pd.Categorical(summary["family"], categories=list(FAMILIES))
    summary["kind"] = pd.Categorical(summary["kind"], categories=list(KINDS))
    cols = ["model", *[c for c in summary.columns if c != "model"]]
    return summary[cols].sort_values(["family", "kind", "width", "first", "plan"]).reset_index(drop=True)


def edits_study(engine: Engine, tokens: torch.Tensor, first: int, model: str, settings, *,
                robustness_tokens: pd.DataFrame | None = None, batch_size: int = 2,
                compile: bool | str = False) -> EditsResult:
    """The ``layer_edits`` rule's tables for one model on the first ``settings.n_sequences``
    x ``settings.seq_len`` corpus tokens. Windows of one block come from
    ``robustness_tokens`` (the robustness study's per-token table) when given, else are run."""
    settings = settings if isinstance(settings, EditSettings) else EditSettings.from_config(settings)
    ids = tokens[: settings.n_sequences, : settings.seq_len]
    n_seq, seq_len = ids.shape
    n = engine.n_layers
    widths = [w for w in range(1, settings.window_max + 1) if w <= n]
    computed = [w for w in widths if w > 1 or robustness_tokens is None]
    plans = edit_plans(n, settings, computed)
    log.info("%s: %d plans on %d x %d tokens (%d block calls)", model, len(plans), n_seq, seq_len,
             sum(p.block_calls() - p.start for p in plans))
    run = run_plans(engine, ids, plans, first=first, batch_size=batch_size, compile=compile)
    per_token = run.tokens
    described = [plan_table(plans, n)]
    if robustness_tokens is not None and 1 in widths:
        ones = drop_tokens(robustness_tokens, n, n_seq, seq_len, first)
        one_plans = [Plan("window", "drop", L, tuple(range(L + 1, n)), L, L) for L in range(n)]
        described.append(plan_table(one_plans, n, source="robustness"))
        per_token = pd.concat([ones, per_token.assign(plan=per_token["plan"].astype(str))], ignore_index=True)
    per_token.insert(0, "model", model)
    plan_info = pd.concat(described, ignore_index=True)
    summary = summarise_edits(per_token, plan_info)
    names = list(summary["plan"])
    per_token["plan"] = pd.Categorical(per_token["plan"].astype(str), categories=names)
    per_token = per_token.sort_values(["plan", "seq", "pos"], kind="stable").reset_index(drop=True)

    cka = cka_table(run.cka, n, run.documents, run.positions)
    cka.insert(0, "model", model)
    windows = summary[summary["family"] == "window"]
    predictors = predictors_table(run.stats.table(widths), windows)
    spearman = spearman_table(predictors)
    return EditsResult(summary, per_token, cka, predictors, spearman)
