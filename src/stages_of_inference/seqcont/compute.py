"""Sequence-continuation circuits: task metrics, mean ablation, circuit discovery, OV scores.

Everything runs on the core engine (``core.engine.Engine``): one ``baseline`` pass per
task records every block's input, and every ablation is ``run_from(L, hooks=..., repeat=k)``
from the cached residual entering the lowest ablated layer.

Definitions (after Lan, Torr & Barez, "Towards Interpretable Sequence Continuation",
and their repository apartresearch/seqcont_circuits):

* **logit difference** of a prompt: logit of the answer (the next item) minus logit of
  the last shown item, at the last position. A task's logit difference is the mean over
  its prompts; accuracy is the share of prompts whose top-1 token is the answer.
* **mean ablation** of a component: its output (an attention head's ``hook_z`` slice or
  an MLP's ``hook_mlp_out``) is replaced, at every position, by its mean over the task's
  corrupted prompts at that position. ``score_pct`` = 100 x ablated / clean logit
  difference ("% of clean"); ``effect_pct`` = 100 x (ablated - clean) / |clean|.
* **circuit discovery** (the repository's iterative node pruning, ``run_node_ablation.py``
  with ``loop_node_ablation_fns.find_circuit_backw`` / ``find_circuit_forw``): start from
  the full model; a *backward sweep* visits the components still in the circuit from the
  last layer to the first (within a layer: the MLP, then heads 0..H-1), a *forward sweep*
  from the first layer to the last (within a layer: heads 0..H-1, then the MLP); each
  candidate is mean-ablated together with everything removed so far and the removal is
  kept when the logit difference stays *strictly above* ``threshold`` x clean (the
  repository removes when ``100 - score % < T``, T = 20). ``sweeps: repository``
  (default) alternates backward and forward sweeps until a sweep removes nothing, as the
  repository's ``while`` loop without ``--one_iter``; ``backward_once`` stops after the
  first backward sweep. Seeded orders (``order`` > 0, ours) shuffle the components within
  each layer. The rest is the circuit. Each trial runs from the cached residual entering
  the lowest ablated layer. The final circuit is re-scored by a fresh full forward pass
  with everything outside it ablated. Tasks whose clean logit difference is <= 0 get no
  circuit (the ratio is meaningless).
* **successor score** of a head, two definitions, both in the table (``score``):

  - ``lan_torr_barez`` (default; the repository's ``get_next_scores`` / ``get_copy_scores``
    in ``src/OV_scores/OV_score_fns.py``): OV prompts of four consecutive items
    ``"S1 S2 S3 S4"`` (:func:`ov_prompts`); the residual after block 0 at each item's
    position *in context*; the head's value vector from it, ``v = norm_L(r0) W_V + b_V``,
    its output ``o = v W_O`` (no ``b_O``), then the final norm and the unembedding over the
    *full* vocabulary; a case counts when the item's successor (``copy_score``: the item)
    decodes as one of the ``top_k`` (5) tokens, with or without a leading space; the
    score is the share of (prompt, item) cases (the repository prints it in %). The
    repository's code calls ``model.blocks[1].attn.ln1`` for every layer, but its
    EasyTransformer model was loaded with folded norms (its notebook prints "Moved LN1 to
    the attention block", the ``LNPre`` case): that module is then parameter-free and each
    layer's own ln1 gain and bias sit folded in that layer's ``W_V``, ``b_V``; likewise the
    final norm's gain in ``W_U``. What it computes is each layer's own input norm applied to
    the block-0 residual, which is what runs here (block L's attention on the residual as
    a one-token sequence, whose pattern is 1, so ``hook_z`` is ``v``). Heads of layer 0 read
    the block-0 residual too, as there. Its months branch compares a month with the next
    *ordinal* (``ranks[months.index(m) + 1]``: January -> "second"); here every family's
    successor is its next item (January -> February).
  - ``isolated`` (ours): each item token alone (a one-token sequence) through block 0 (its
    *effective embedding*), the head's OV output as above, and the final norm + unembedding
    restricted to the family's single-token items: the share of items k whose successor
    k + 1 gets the highest logit among them (``copy_score``: k itself; ``successor_rank``:
    the successor's mean rank). Heads of layer 0 read the raw embedding. It says what the
    repository's score does not: whether the head's OV map ranks the *next member* above
    the other members of the sequence (k + 1 rather than k, k + 2, ...), context-free and
    without string matching, whereas the full-vocabulary top 5 asks whether the successor
    is among the head's five strongest outputs of all tokens, where ordinals, number words
    and other forms compete (GPT-2's head 9.1 gives " third", " fourth", "third", "3",
    " fifth" for "2"), and a head whose top 5 holds both k and k + 1 counts there as a
    successor head and a copy head at once; the top-1 among the items says which wins.

  With sandwich norms (Gemma 3) a head's output passes the layer's post-attention norm on
  its own before the final norm reads it: of that norm only the gain ``1 + w`` matters,
  because the final norm removes any scale (a single head's share of the frozen rms of
  the whole layer's output would be a scale, too).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .prompts import CYCLIC, FAMILIES, SeqcontSettings, item_token, task_parts

log = logging.getLogger(__name__)

TASK_COLUMNS = ["model", "task", "family", "variant", "n_prompts", "n_tokens", "accuracy", "logit_diff",
                "logit_diff_sd", "accuracy_corrupt", "logit_diff_corrupt"]
COMPONENT_COLUMNS = ["model", "task", "layer", "head", "component", "kind", "logit_diff", "logit_diff_clean",
                     "score_pct", "effect_pct"]
SUCCESSOR_COLUMNS = ["model", "family", "score", "layer", "head", "component", "successor_score", "copy_score",
                     "successor_rank", "n_scored"]
CIRCUIT_COLUMNS = ["model", "task", "order", "step", "layer", "head", "component", "kind", "trial_score_pct",
                   "removed_in_sweep", "in_circuit"]
SUMMARY_COLUMNS = ["model", "task", "order", "solved", "n_prompts", "logit_diff_clean", "n_heads", "n_mlps",
                   "n_components", "n_total", "n_sweeps", "final_score_pct", "recheck_score_pct", "seconds"]
OVERLAP_COLUMNS = ["model", "layer", "head", "component", "kind", "n_tasks", "tasks", "order_frequency",
                   "successor_score"]

MLP = -1  # the ``head`` of an MLP component


def component_name(layer: int, head: int) -> str:
    return f"MLP{layer}" if head == MLP else f"L{layer}H{head}"


# --------------------------------------------------------------------------------------
# Task tensors and metrics


@dataclass
class TaskBatch:
    task: str
    clean: torch.Tensor  # [B, T]
    corrupt: torch.Tensor  # [B, T]
    answer: torch.Tensor  # [B]
    incorrect: torch.Tensor  # [B]

    @classmethod
    def from_prompts(cls, prompts: pd.DataFrame, task: str, device="cpu") -> "TaskBatch":
        rows = prompts[prompts["task"] == task]
        as_tensor = lambda col: torch.tensor(np.stack(rows[col].map(np.asarray).to_list()), device=device)  # noqa: E731
        return cls(task, as_tensor("input_ids"), as_tensor("corrupt_ids"),
                   torch.tensor(rows["answer_id"].to_numpy(), device=device),
                   torch.tensor(rows["incorrect_id"].to_numpy(), device=device))

    def __len__(self):
        return len(self.answer)


def logit_diff(last_logits: torch.Tensor, answer: torch.Tensor, incorrect: torch.Tensor) -> torch.Tensor:
    """Per-prompt logit difference ``[B]`` from last-position logits ``[B, V]``."""
    rows = torch.arange(len(answer), device=last_logits.device)
    return last_logits[rows, answer] - last_logits[rows, incorrect]


def accuracy(last_logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return (last_logits.argmax(-1) == answer).float()


def _variant_diffs(logits: torch.Tensor, batch: TaskBatch, k: int) -> torch.Tensor:
    """Mean logit difference of each of ``k`` variant-major stacked runs: ``[k]``."""
    last = logits[:, -1].float()
    b = len(batch)
    ld = logit_diff(last, batch.answer.repeat(k), batch.incorrect.repeat(k))
    return ld.view(k, b).mean(1)


# --------------------------------------------------------------------------------------
# Means over the corrupted prompts, and the hooks that patch them in


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def mlp_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def corrupted_means(engine, corrupt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position means over the corrupted prompts of every head's ``hook_z``
    ([T, H, d_head]) and every MLP's ``hook_mlp_out`` ([T, d]), by hook name."""
    means: dict[str, torch.Tensor] = {}

    def capture(name):
        def fn(t):
            means[name] = t.detach().float().mean(0)
            return None

        return fn

    names = [h(L) for L in range(engine.n_layers) for h in (z_hook, mlp_hook)]
    engine.baseline(corrupt, hooks=[(n, capture(n)) for n in names])
    return means


# --------------------------------------------------------------------------------------
# Clean metrics and single-component ablation


def task_metrics(engine, batch: TaskBatch) -> dict:
    """Accuracy and logit difference on the clean and the corrupted prompts."""
    with torch.inference_mode():
        corrupt_last = engine.baseline(batch.corrupt)[:, -1].float()
        clean_last = engine.baseline(batch.clean)[:, -1].float()
    ld = logit_diff(clean_last, batch.answer, batch.incorrect)
    return dict(
        n_prompts=len(batch), n_tokens=int(batch.clean.shape[1]),
        accuracy=float(accuracy(clean_last, batch.answer).mean()),
        logit_diff=float(ld.mean()), logit_diff_sd=float(ld.std()) if len(batch) > 1 else 0.0,
        accuracy_corrupt=float(accuracy(corrupt_last, batch.answer).mean()),
        logit_diff_corrupt=float(logit_diff(corrupt_last, batch.answer, batch.incorrect).mean()),
    )


def component_effects(engine, batch: TaskBatch, means=None, progress: bool = False) -> pd.DataFrame:
    """Mean-ablate every head and every MLP alone. One pass per layer: all heads of the
    layer and its MLP are ``H + 1`` variants of one ``run_from(L, repeat=H + 1)``."""
    from tqdm.auto import tqdm

    with torch.inference_mode():
        means = means if means is not None else corrupted_means(engine, batch.corrupt)
        clean = float(_variant_diffs(engine.baseline(batch.clean), batch, 1)[0])
        n_heads, b = engine.n_heads, len(batch)
        k = n_heads + 1
        rows = []
        for layer in tqdm(range(engine.n_layers), desc=f"ablate {batch.task}", disable=not progress):
            zm, mm = means[z_hook(layer)], means[mlp_hook(layer)]

            def fz(z, zm=zm):
                z = z.clone()
                for h in range(n_heads):  # variant h ablates head h
                    z[h * b:(h + 1) * b, :, h] = zm[None, :, h].to(z.dtype)
                return z

            def fm(x, mm=mm):
                x = x.clone()
                x[n_heads * b:] = mm[None].to(x.dtype)  # the last variant ablates the MLP
                return x

            diffs = _variant_diffs(
                engine.run_from(layer, hooks=[(z_hook(layer), fz), (mlp_hook(layer), fm)], repeat=k,
                                positions=slice(-1, None)), batch, k).tolist()
            for h, d in zip([*range(n_heads), MLP], diffs):
                rows.append(dict(task=batch.task, layer=layer, head=h, component=component_name(layer, h),
                                 kind="mlp" if h == MLP else "head", logit_diff=d, logit_diff_clean=clean))
    df = pd.DataFrame(rows)
    df["score_pct"] = 100 * df["logit_diff"] / clean if clean > 0 else np.nan
    df["effect_pct"] = 100 * (df["logit_diff"] - clean) / abs(clean) if clean != 0 else np.nan
    return df


# --------------------------------------------------------------------------------------
# Circuit discovery


SWEEPS = ("repository", "backward_once")


def removal_order(n_layers: int, n_heads: int, seed: int, sweep: int = 0) -> list[tuple[int, int]]:
    """A backward sweep: components from the last layer to the first; within a layer the
    MLP then heads 0..H-1 (seed 0, the repository's ``find_circuit_backw``), or a shuffle
    within each layer seeded by ``seed`` (the first sweep) or (seed, sweep) (seed > 0)."""
    rng = np.random.default_rng(seed if sweep == 0 else [seed, sweep])
    order = []
    for layer in range(n_layers - 1, -1, -1):
        comps = [(layer, MLP)] + [(layer, h) for h in range(n_heads)]
        if seed:
            comps = [comps[i] for i in rng.permutation(len(comps))]
        order.extend(comps)
    return order


def forward_order(n_layers: int, n_heads: int, seed: int, sweep: int) -> list[tuple[int, int]]:
    """A forward sweep: components from the first layer to the last; within a layer heads
    0..H-1 then the MLP (seed 0, the repository's ``find_circuit_forw``), or a shuffle
    within each layer seeded by (seed, sweep) (seed > 0)."""
    rng = np.random.default_rng([seed, sweep])
    order = []
    for layer in range(n_layers):
        comps = [(layer, h) for h in range(n_heads)] + [(layer, MLP)]
        if seed:
            comps = [comps[i] for i in rng.permutation(len(comps))]
        order.extend(comps)
    return order


def sweep_order(n_layers: int, n_heads: int, seed: int, sweep: int) -> list[tuple[int, int]]:
    """Sweep ``sweep`` (0, 1, 2, ...) of the repository's loop: backward, forward, backward, ..."""
    if sweep % 2 == 0:
        return removal_order(n_layers, n_heads, seed, sweep)
    return forward_order(n_layers, n_heads, seed, sweep)


def _group_hooks(removed: list[dict[int, set[int]]], means: list[dict], rows: list[slice]):
    """Hooks that mean-ablate, in the rows of task t, the components ``removed[t]`` with
    task t's means (tasks of one prompt length searched in one batch)."""
    by_layer: dict[int, list[tuple[slice, list[int], bool, dict]]] = {}
    for rem, mean, sl in zip(removed, means, rows):
        for layer, comps in rem.items():
            if comps:
                heads = sorted(h for h in comps if h != MLP)
                by_layer.setdefault(layer, []).append((sl, heads, MLP in comps, mean))
    hooks = []
    for layer, parts in sorted(by_layer.items()):
        if any(heads for _, heads, _, _ in parts):
            def fz(z, parts=parts, layer=layer):
                z = z.clone()
                for sl, heads, _, mean in parts:
                    if heads:
                        z[sl, :, heads] = mean[z_hook(layer)][None, :, heads].to(z.dtype)
                return z

            hooks.append((z_hook(layer), fz))
        if any(mlp for _, _, mlp, _ in parts):
            def fm(x, parts=parts, layer=layer):
                x = x.clone()
                for sl, _, mlp, mean in parts:
                    if mlp:
                        x[sl] = mean[mlp_hook(layer)][None].to(x.dtype)
                return x

            hooks.append((mlp_hook(layer), fm))
    return hooks


def _group_diffs(logits: torch.Tensor, batches: list[TaskBatch], rows: list[slice]) -> list[float]:
    last = logits[:, -1].float()
    return [float(logit_diff(last[sl], b.answer, b.incorrect).mean()) for b, sl in zip(batches, rows)]


def find_circuits(engine, batches: list[TaskBatch], means: list[dict], threshold: float, order_seed: int = 0,
                  progress: bool = False, sweeps: str = "repository") -> list[tuple[pd.DataFrame, dict]]:
    """Iterative pruning (module docstring) for several tasks whose prompts have the same
    length, in one batch: rows of different prompts never interact, every task visits the
    same order and keeps its own removals and means, so each task's result is exactly that
    of a search on its own. Returns one (rows, summary) per task: a row per component (in
    the first sweep's order) with ``in_circuit``, the score of its last trial and the sweep
    that removed it (-1: kept)."""
    from tqdm.auto import tqdm

    if sweeps not in SWEEPS:
        raise ValueError(f"sweeps {sweeps!r}: use one of {', '.join(SWEEPS)}.")
    t0 = time.perf_counter()
    n_tasks = len(batches)
    sizes = np.cumsum([0] + [len(b) for b in batches])
    rows_of = [slice(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:])]
    clean_ids = torch.cat([b.clean for b in batches])
    names = "+".join(b.task for b in batches)
    first = removal_order(engine.n_layers, engine.n_heads, order_seed)
    last_score = [{c: np.nan for c in first} for _ in batches]
    removed_in = [{c: -1 for c in first} for _ in batches]
    with torch.inference_mode():
        clean = _group_diffs(engine.baseline(clean_ids), batches, rows_of)
        solved = [c > 0 for c in clean]
        done = [not ok for ok in solved]
        n_sweeps = [0] * n_tasks
        removed: list[dict[int, set[int]]] = [{} for _ in batches]
        sweep = 0
        bar = tqdm(desc=f"circuit {names} order {order_seed}", unit="trial", disable=not progress or not any(solved))
        while not all(done):
            order = sweep_order(engine.n_layers, engine.n_heads, order_seed, sweep)
            changed = [False] * n_tasks
            for layer, head in order:
                active = [not done[t] and head not in removed[t].get(layer, set()) for t in range(n_tasks)]
                if not any(active):
                    continue
                trials = []
                for t in range(n_tasks):
                    trial = {L: set(c) for L, c in removed[t].items()}
                    if active[t]:
                        trial.setdefault(layer, set()).add(head)
                    trials.append(trial)
                start = min(L for tr in trials for L, c in tr.items() if c)
                logits = engine.run_from(start, hooks=_group_hooks(trials, means, rows_of), positions=slice(-1, None))
                diffs = _group_diffs(logits, batches, rows_of)
                bar.update(1)
                for t in range(n_tasks):
                    if not active[t]:
                        continue
                    score = diffs[t] / clean[t]
                    last_score[t][(layer, head)] = score
                    if score > threshold:  # the repository: removed when (100 - score %) < 100 - threshold %
                        removed[t] = trials[t]
                        removed_in[t][(layer, head)] = sweep
                        changed[t] = True
            for t in range(n_tasks):
                if not done[t]:
                    n_sweeps[t] += 1
                    # the repository stops at the first sweep that changes nothing
                    done[t] = not changed[t] or sweeps == "backward_once"
            sweep += 1
        bar.close()
        final = recheck = [np.nan] * n_tasks
        if any(solved):
            start = min([L for r in removed for L, c in r.items() if c] or [0])
            final = _group_diffs(engine.run_from(start, hooks=_group_hooks(removed, means, rows_of),
                                                 positions=slice(-1, None)), batches, rows_of)
            # independent re-check: a fresh full forward pass with everything outside ablated
            recheck = _group_diffs(engine.baseline(clean_ids, hooks=_group_hooks(removed, means, rows_of)),
                                   batches, rows_of)
            engine.baseline(clean_ids)  # restore the clean cache
    seconds = (time.perf_counter() - t0) / n_tasks
    out = []
    for t, b in enumerate(batches):
        records = [dict(task=b.task, order=order_seed, step=step, layer=layer, head=head,
                        component=component_name(layer, head), kind="mlp" if head == MLP else "head",
                        trial_score_pct=100 * last_score[t][(layer, head)],
                        removed_in_sweep=removed_in[t][(layer, head)],
                        in_circuit=solved[t] and head not in removed[t].get(layer, set()))
                   for step, (layer, head) in enumerate(first)]
        df = pd.DataFrame(records)
        circuit = df[df["in_circuit"]]
        summary = dict(task=b.task, order=order_seed, solved=solved[t], n_prompts=len(b), logit_diff_clean=clean[t],
                       n_heads=int((circuit["kind"] == "head").sum()), n_mlps=int((circuit["kind"] == "mlp").sum()),
                       n_components=len(circuit), n_total=len(df), n_sweeps=n_sweeps[t],
                       final_score_pct=100 * final[t] / clean[t] if solved[t] else np.nan,
                       recheck_score_pct=100 * recheck[t] / clean[t] if solved[t] else np.nan, seconds=seconds)
        out.append((df, summary))
    return out


def find_circuit(engine, batch: TaskBatch, means, threshold: float, order_seed: int = 0,
                 progress: bool = False, sweeps: str = "repository") -> tuple[pd.DataFrame, dict]:
    """``find_circuits`` for one task."""
    return find_circuits(engine, [batch], [means], threshold, order_seed, progress, sweeps)[0]


def overlap(circuits: pd.DataFrame, successor: pd.DataFrame | None = None,
            score: str = "lan_torr_barez") -> pd.DataFrame:
    """Per component of any order-0 circuit: in how many tasks' circuits it is, which,
    and how often (over all orders and tasks) it is kept. ``successor``: the best
    successor score (the ``score`` named) of the head over the families."""
    if circuits.empty:
        return pd.DataFrame(columns=OVERLAP_COLUMNS)
    kept = circuits[circuits["in_circuit"]]
    first = kept[kept["order"] == kept["order"].min()] if len(kept) else kept
    freq = (circuits.groupby(["model", "layer", "head"])["in_circuit"].mean().rename("order_frequency"))
    rows = (first.groupby(["model", "layer", "head", "component", "kind"])["task"]
            .agg(n_tasks="nunique", tasks=lambda t: ",".join(sorted(set(t)))).reset_index())
    rows = rows.join(freq, on=["model", "layer", "head"])
    if successor is not None and len(successor):
        successor = successor[successor["score"] == score] if "score" in successor else successor
        best = successor.groupby(["model", "layer", "head"])["successor_score"].max()
        rows = rows.join(best, on=["model", "layer", "head"])
    else:
        rows["successor_score"] = np.nan
    return rows.sort_values(["n_tasks", "layer", "head"], ascending=[False, True, True])[OVERLAP_COLUMNS]


# --------------------------------------------------------------------------------------
# Successor scores from the OV circuits


SUCCESSOR_SCORES = ("lan_torr_barez", "isolated")
OV_N_ITEMS = 4      # the repository's OV prompts: "S1 S2 S3 S4"
OV_SEPARATOR = " "


def family_item_ids(tokenizer, family: str) -> tuple[list[str], list[int]]:
    """The family's single-token items (in order) and their answer-form token ids."""
    items, ids = [], []
    for w in FAMILIES[family]:
        t = item_token(tokenizer, w)
        if t is not None:
            items.append(w)
            ids.append(t)
    return items, ids


def head_outputs(engine, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Each head's output ``z_h W_O[h]`` (no bias): ``[H, n, d]`` from ``z [n, H, d_head]``.
    With sandwich norms (Gemma) each head's output then passes the layer's
    post-attention norm on its own: of that norm only the gain ``1 + w`` matters here,
    because the final norm that reads the output removes any scale."""
    w_o = engine.head_out_weights(layer)  # [H, d_head, d]
    out = torch.einsum("nhe,hed->hnd", z.to(w_o.dtype), w_o)
    post = engine.attn_post_norm(layer)
    return post(out) if post is not None else out


def item_logits(engine, hidden: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Final norm + unembedding restricted to ``token_ids``: ``[..., len(token_ids)]``."""
    head = engine.lm_head
    ids = torch.tensor(token_ids, device=head.weight.device)
    bias = head.bias[ids] if getattr(head, "bias", None) is not None else None
    return torch.nn.functional.linear(engine.final_norm(hidden), head.weight[ids], bias)


def _values(engine, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s attention on one-token sequences ``hidden [n, 1, d]``: the pattern
    is 1, so ``hook_z`` is each head's value vector ``norm_L(x) W_V + b_V`` (``[n, H, d_head]``).
    Needs a recorded baseline of ``n`` one-token sequences."""
    got = {}

    def capture(z):
        got["z"] = z.detach()
        return None

    engine.run_from(layer, order=[layer], hooks=[(z_hook(layer), capture)], output="residual", hidden=hidden)
    return got["z"][:, 0]


def ov_logits(engine, token_ids: list[int]) -> dict[int, torch.Tensor]:
    """{layer: [H, n, n]} logits of the tokens ``token_ids`` from every head's OV output
    on each token's effective embedding, the token alone (module docstring)."""
    device = engine.device
    ids = torch.tensor(token_ids, device=device)[:, None]  # n one-token sequences
    out = {}
    with torch.inference_mode():
        engine.baseline(ids)
        for layer in range(engine.n_layers):
            hidden = engine.residual_in(0 if layer == 0 else 1)
            heads = head_outputs(engine, layer, _values(engine, layer, hidden))
            out[layer] = item_logits(engine, heads, token_ids).float()
    return out


@dataclass
class OVCases:
    """The repository's OV items: every item of every OV prompt, in context."""

    family: list[str]
    item: list[str]
    successor: list[str]
    resid: torch.Tensor  # [n, d] the residual after block 0 at the item's position
    n_prompts: dict


def ov_prompts(tokenizer, family: str) -> list[dict]:
    """The repository's OV prompts of a family (``allTasks_nextScores``): every run of four
    consecutive items ``"S1 S2 S3 S4"`` whose last item has a successor in the family's
    list (no wrap-around: its months and number words are ``range(0, 8)`` of 12), BOS
    first (the repository's GPT-2 inputs had none), kept when all four items are single
    tokens in context; each item whose successor is also a single token is scored (the
    repository's GPT-2 numerals 1..100 all had single-token successors). Returns dicts of
    ``ids``, item ``positions``, ``items``, ``successors`` (None: not scored)."""
    from .prompts import _build, _encode, _token_at

    words = FAMILIES[family]
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
    single = {w: item_token(tokenizer, w) is not None for w in words}
    out = []
    for s in range(len(words) - OV_N_ITEMS):
        items = words[s:s + OV_N_ITEMS]
        text, spans = _build(None, items[:-1], items[-1], OV_SEPARATOR)
        ids, offsets = _encode(tokenizer, text)
        positions = [_token_at(offsets, a, b) for a, b in spans]
        if any(p is None for p in positions) or len(set(positions)) != len(positions):
            continue
        nexts = [words[s + k + 1] for k in range(OV_N_ITEMS)]
        out.append(dict(ids=bos + [int(i) for i in ids], positions=[len(bos) + p for p in positions], items=items,
                        successors=[w if single[w] else None for w in nexts]))
    return out


def ov_cases(engine, tokenizer, families) -> OVCases:
    """The residual after block 0, in context, at every scored item of every family's OV
    prompts (prompts of one length in one pass that stops after block 0)."""
    fam, item, succ, resid, n_prompts = [], [], [], [], {}
    with torch.inference_mode():
        for family in families:
            prompts = ov_prompts(tokenizer, family)
            n_prompts[family] = len(prompts)
            by_len: dict[int, list[dict]] = {}
            for p in prompts:
                by_len.setdefault(len(p["ids"]), []).append(p)
            for group in by_len.values():
                ids = torch.tensor([p["ids"] for p in group], device=engine.device)
                r0 = engine.run_to(ids, 1).float()  # the residual after block 0: [B, T, d]
                for b, p in enumerate(group):
                    for pos, w, nxt in zip(p["positions"], p["items"], p["successors"]):
                        if nxt is None:
                            continue
                        fam.append(family)
                        item.append(w)
                        succ.append(nxt)
                        resid.append(r0[b, pos])
    d = engine.d_model
    return OVCases(fam, item, succ, torch.stack(resid) if resid else torch.zeros(0, d), n_prompts)


def _matches(tokenizer, cache: dict, token_id: int, word: str) -> bool:
    """The repository's test: the decoded token is ``" " + word`` or ``word``."""
    if token_id not in cache:
        cache[token_id] = tokenizer.decode([token_id])
    return cache[token_id] in (" " + word, word)


def lan_torr_barez_scores(engine, tokenizer, families, top_k: int = 5) -> pd.DataFrame:
    """The repository's ``get_next_scores`` / ``get_copy_scores`` for every head (module
    docstring): per family, the share of scored (prompt, item) cases whose successor (the
    item itself) is among the ``top_k`` tokens of the full vocabulary. The repository
    prints percentages; these are fractions."""
    cases = ov_cases(engine, tokenizer, families)
    n = len(cases.item)
    if n == 0:
        return pd.DataFrame(columns=[c for c in SUCCESSOR_COLUMNS if c != "model"])
    fam = np.array(cases.family)
    cache: dict = {}
    rows = []
    with torch.inference_mode():
        engine.baseline(torch.zeros(n, 1, dtype=torch.long, device=engine.device))  # one-token calls
        hidden = cases.resid[:, None].to(engine.device, engine.dtype)
        for layer in range(engine.n_layers):
            heads = head_outputs(engine, layer, _values(engine, layer, hidden))  # [H, n, d]
            for h in range(heads.shape[0]):
                top = engine.unembed(heads[h]).float().topk(top_k, dim=-1).indices.cpu().tolist()  # [n, k]
                nxt = np.array([any(_matches(tokenizer, cache, t, cases.successor[i]) for t in top[i])
                                for i in range(n)])
                cpy = np.array([any(_matches(tokenizer, cache, t, cases.item[i]) for t in top[i]) for i in range(n)])
                for family in dict.fromkeys(cases.family):
                    sel = fam == family
                    rows.append(dict(family=family, score="lan_torr_barez", layer=layer, head=h,
                                     component=component_name(layer, h), successor_score=float(nxt[sel].mean()),
                                     copy_score=float(cpy[sel].mean()), successor_rank=np.nan,
                                     n_scored=int(sel.sum())))
    return pd.DataFrame(rows, columns=[c for c in SUCCESSOR_COLUMNS if c != "model"])


def isolated_scores(engine, tokenizer, families) -> pd.DataFrame:
    """Our variant (module docstring): each item alone, the top-1 among the family's
    single-token items; one OV pass over the items of all families together."""
    plan = []
    for family in families:
        items, ids = family_item_ids(tokenizer, family)
        words = FAMILIES[family]
        pairs = []  # (index of k, index of k + 1) within items
        for i, w in enumerate(items):
            j = words.index(w) + 1
            if j == len(words):
                if family not in CYCLIC:
                    continue
                j = 0
            if words[j] in items:
                pairs.append((i, items.index(words[j])))
        if len(pairs) < 2:
            log.warning("%s: %d single-token items, no isolated successor scores", family, len(items))
            continue
        plan.append((family, ids, pairs))
    if not plan:
        return pd.DataFrame(columns=[c for c in SUCCESSOR_COLUMNS if c != "model"])
    union = list(dict.fromkeys(t for _, ids, _ in plan for t in ids))
    logits = ov_logits(engine, union)  # {layer: [H, n_union, n_union]}
    rows = []
    for family, ids, pairs in plan:
        at = torch.tensor([union.index(t) for t in ids])
        src = torch.tensor([p[0] for p in pairs])
        dst = torch.tensor([p[1] for p in pairs])
        for layer, lg in logits.items():
            sub = lg[:, at][:, :, at].cpu()[:, src]  # [H, pairs, family items]
            top = sub.argmax(-1)
            rank = 1 + (sub > sub.gather(-1, dst[None, :, None].expand(sub.shape[0], -1, 1))).sum(-1)
            for h in range(sub.shape[0]):
                rows.append(dict(family=family, score="isolated", layer=layer, head=h,
                                 component=component_name(layer, h),
                                 successor_score=float((top[h] == dst).float().mean()),
                                 copy_score=float((top[h] == src).float().mean()),
                                 successor_rank=float(rank[h].float().mean()), n_scored=len(pairs)))
    return pd.DataFrame(rows, columns=[c for c in SUCCESSOR_COLUMNS if c != "model"])


def successor_scores(engine, tokenizer, families, top_k: int = 5) -> pd.DataFrame:
    """Both successor scores of every head for each family (``score``: lan_torr_barez,
    then isolated)."""
    frames = [lan_torr_barez_scores(engine, tokenizer, families, top_k), isolated_scores(engine, tokenizer, families)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=[c for c in SUCCESSOR_COLUMNS if c != "model"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------
# The study loops of the model rules


def prompt_tasks(prompts: pd.DataFrame, wanted) -> list[str]:
    """The tasks of ``wanted`` (in order, once each) that have prompts."""
    return [t for t in dict.fromkeys(wanted) if (prompts["task"] == t).any()]


def task_families(tasks) -> list[str]:
    """The item families of ``tasks`` (in order, once each): the successor scores' families."""
    return list(dict.fromkeys(task_parts(t)[0] for t in tasks))


def component_study(engine, prompts: pd.DataFrame, tokenizer, settings: SeqcontSettings, model: str,
                    progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ``seqcont_components`` rule's tables for one model: ``(tasks, components,
    successor)``. Per task of ``settings.tasks`` that has prompts: accuracy and logit
    difference (TASK_COLUMNS) and every head's and MLP's mean-ablation effect
    (COMPONENT_COLUMNS); every head's successor score for the families of
    ``settings.tasks`` (SUCCESSOR_COLUMNS)."""
    tasks, effects = [], []
    for task in prompt_tasks(prompts, settings.tasks):
        t1 = time.perf_counter()
        batch = TaskBatch.from_prompts(prompts, task, device=engine.device)
        family, variant = task_parts(task)
        with torch.inference_mode():
            metrics = task_metrics(engine, batch)
            tasks.append(dict(model=model, task=task, family=family, variant=variant, **metrics))
            df = component_effects(engine, batch, corrupted_means(engine, batch.corrupt), progress=progress)
        effects.append(df.assign(model=model))
        log.info("%s %-15s n=%d acc %.2f logit diff %.2f (corrupted %.2f); ablation of %d components in %.1f s",
                 model, task, len(batch), metrics["accuracy"], metrics["logit_diff"], metrics["logit_diff_corrupt"],
                 len(df), time.perf_counter() - t1)
    t1 = time.perf_counter()
    successor = successor_scores(engine, tokenizer, task_families(settings.tasks),
                                 settings.successor_top_k).assign(model=model)
    log.info("%s: successor scores of %d heads x %d families in %.1f s", model,
             successor[["layer", "head"]].drop_duplicates().shape[0], successor["family"].nunique(),
             time.perf_counter() - t1)
    for (fam, score), g in successor.groupby(["family", "score"], sort=False):
        top = g.sort_values("successor_score", ascending=False).head(3)
        log.info("%s %s %s (%d scored): top successor heads %s", model, fam, score, int(g["n_scored"].iloc[0]),
                 ", ".join(f"{r.component}={r.successor_score:.2f}" for r in top.itertuples()))
    components = (pd.concat(effects, ignore_index=True)[COMPONENT_COLUMNS] if effects
                  else pd.DataFrame(columns=COMPONENT_COLUMNS))
    return pd.DataFrame(tasks, columns=TASK_COLUMNS), components, successor[SUCCESSOR_COLUMNS]


def length_groups(batches: list[TaskBatch]) -> list[list[TaskBatch]]:
    """Tasks grouped by prompt length (in order of first appearance): a group shares every
    forward pass of the circuit search."""
    groups: dict[int, list[TaskBatch]] = {}
    for batch in batches:
        groups.setdefault(batch.clean.shape[1], []).append(batch)
    return list(groups.values())


def circuit_study(engine, prompts: pd.DataFrame, settings: SeqcontSettings, model: str,
                  progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``seqcont_circuits`` rule's tables for one model: ``(circuits, summary)``, the
    iterative pruning of every task of ``settings.circuit_tasks`` that has prompts, for
    each of ``settings.n_orders`` removal orders (tasks of one prompt length searched
    together, :func:`find_circuits`)."""
    rows, summaries = [], []
    batches = [TaskBatch.from_prompts(prompts, task, device=engine.device)
               for task in prompt_tasks(prompts, settings.circuit_tasks)]
    for group in length_groups(batches):
        means = [corrupted_means(engine, batch.corrupt) for batch in group]
        for order in range(settings.n_orders):
            for df, summary in find_circuits(engine, group, means, settings.threshold, order_seed=order,
                                             progress=progress, sweeps=settings.sweeps):
                rows.append(df.assign(model=model))
                summaries.append(dict(model=model, **summary))
                circuit = df[df["in_circuit"]]
                log.info("%s %-15s order %d: %s; %d heads + %d MLPs after %d sweeps, score %.1f%% (re-check %.1f%%); "
                         "%.1f s per task: %s", model, summary["task"], order,
                         "solved" if summary["solved"] else "clean logit diff <= 0, no circuit",
                         summary["n_heads"], summary["n_mlps"], summary["n_sweeps"], summary["final_score_pct"],
                         summary["recheck_score_pct"], summary["seconds"],
                         " ".join(circuit["component"]) if summary["solved"] else "-")
    circuits = pd.concat(rows, ignore_index=True)[CIRCUIT_COLUMNS] if rows else pd.DataFrame(columns=CIRCUIT_COLUMNS)
    return circuits, pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)


def model_overlap(model: str, circuits: pd.DataFrame, successor: pd.DataFrame,
                  score: str = "lan_torr_barez") -> pd.DataFrame:
    """The ``seqcont_overlap`` rule's table: :func:`overlap`, with the shared components logged."""
    shared = overlap(circuits, successor, score)
    for r in shared[shared["n_tasks"] >= 2].itertuples():
        log.info("%s shared: %s in %d tasks (%s), kept in %.0f%% of task x order runs, successor score (%s) %.2f",
                 model, r.component, r.n_tasks, r.tasks, 100 * r.order_frequency, score, r.successor_score)
    log.info("%s: %d components in some circuit, %d shared by >= 2 tasks", model, len(shared),
             int((shared["n_tasks"] >= 2).sum()))
    return shared
