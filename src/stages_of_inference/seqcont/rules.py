"""File paths in, tables and figures out: one function per rule of workflow/rules/seqcont.smk."""
from __future__ import annotations

import logging
import time
from typing import Sequence

import pandas as pd

from ..core.io import write_parquet

log = logging.getLogger(__name__)


def _load(model: str, manifest: str, prompts_path: str, params: dict, runtime: dict):
    """What both model-running rules start with: the settings, the prompts, the engine."""
    from ..core.engine import engine_for_job
    from .prompts import SeqcontSpec

    spec = SeqcontSpec.from_config(params)
    prompts = pd.read_parquet(prompts_path)
    t0 = time.perf_counter()
    engine = engine_for_job(manifest, runtime)
    log.info("%s: model loaded in %.1f s", model, time.perf_counter() - t0)
    return spec, prompts, engine


def _concat(paths: Sequence[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.read_parquet(paths[0])


def _tasks(prompts: pd.DataFrame, wanted) -> list[str]:
    return [t for t in dict.fromkeys(wanted) if (prompts["task"] == t).any()]


def seqcont_prompts(model: str, manifest: str, params: dict, out_prompts: str, out_counts: str) -> None:
    """Tokenizer only: the seeded task prompts that survive the single-token filter."""
    from ..core.models import load_prepared_tokenizer
    from .prompts import SeqcontSpec, make_prompts

    spec = SeqcontSpec.from_config(params)
    prompts, counts = make_prompts(load_prepared_tokenizer(manifest), spec)
    for c in counts.itertuples():
        log.info("%s %-15s %2d single-token items, %3d candidates, %3d single-token, %3d same length, %2d kept",
                 model, c.task, c.n_single_token_items, c.n_candidates, c.n_single_token, c.n_same_length, c.n_kept)
    prompts.insert(0, "model", model)
    counts.insert(0, "model", model)
    write_parquet(prompts, out_prompts)
    write_parquet(counts, out_counts)


def seqcont_effects(model: str, manifest: str, prompts_path: str, params: dict, runtime: dict,
                    out_tasks: str, out_components: str, out_successor: str) -> None:
    """Accuracy and logit difference per task; every head's and MLP's mean-ablation
    effect; every head's successor score per item family."""
    import torch

    from ..core.models import load_prepared_tokenizer
    from .compute import (COMPONENT_COLUMNS, SUCCESSOR_COLUMNS, TASK_COLUMNS, TaskBatch, component_effects,
                          corrupted_means, successor_scores, task_metrics)
    from .prompts import task_parts

    spec, prompts, engine = _load(model, manifest, prompts_path, params, runtime)
    tasks, effects = [], []
    for task in _tasks(prompts, spec.tasks):
        t1 = time.perf_counter()
        batch = TaskBatch.from_prompts(prompts, task, device=engine.device)
        family, variant = task_parts(task)
        with torch.inference_mode():
            metrics = task_metrics(engine, batch)
            tasks.append(dict(model=model, task=task, family=family, variant=variant, **metrics))
            df = component_effects(engine, batch, corrupted_means(engine, batch.corrupt), progress=True)
        effects.append(df.assign(model=model))
        log.info("%s %-15s n=%d acc %.2f logit diff %.2f (corrupted %.2f); ablation of %d components in %.1f s",
                 model, task, len(batch), metrics["accuracy"], metrics["logit_diff"], metrics["logit_diff_corrupt"],
                 len(df), time.perf_counter() - t1)
    families = list(dict.fromkeys(task_parts(t)[0] for t in spec.tasks))
    t1 = time.perf_counter()
    successor = successor_scores(engine, load_prepared_tokenizer(manifest), families).assign(model=model)
    log.info("%s: successor scores of %d heads x %d families in %.1f s", model,
             successor[["layer", "head"]].drop_duplicates().shape[0], successor["family"].nunique(),
             time.perf_counter() - t1)
    for fam, g in successor.groupby("family"):
        top = g.sort_values("successor_score", ascending=False).head(3)
        log.info("%s %s: top successor heads %s", model, fam,
                 ", ".join(f"{r.component}={r.successor_score:.2f}" for r in top.itertuples()))
    write_parquet(pd.DataFrame(tasks, columns=TASK_COLUMNS), out_tasks)
    write_parquet(pd.concat(effects, ignore_index=True)[COMPONENT_COLUMNS] if effects
                  else pd.DataFrame(columns=COMPONENT_COLUMNS), out_components)
    write_parquet(successor[SUCCESSOR_COLUMNS], out_successor)


def seqcont_circuits(model: str, manifest: str, prompts_path: str, params: dict, runtime: dict,
                     out_circuits: str, out_summary: str) -> None:
    """Iterative mean-ablation pruning per circuit task and seeded order; the re-check."""
    from .compute import CIRCUIT_COLUMNS, SUMMARY_COLUMNS, TaskBatch, corrupted_means, find_circuits

    spec, prompts, engine = _load(model, manifest, prompts_path, params, runtime)
    rows, summaries = [], []
    batches = [TaskBatch.from_prompts(prompts, task, device=engine.device)
               for task in _tasks(prompts, spec.circuit_tasks)]
    groups: dict[int, list] = {}  # tasks with the same prompt length share every forward pass
    for batch in batches:
        groups.setdefault(batch.clean.shape[1], []).append(batch)
    for group in groups.values():
        means = [corrupted_means(engine, batch.corrupt) for batch in group]
        for order in range(spec.n_orders):
            for df, summary in find_circuits(engine, group, means, spec.threshold, order_seed=order, progress=True):
                rows.append(df.assign(model=model))
                summaries.append(dict(model=model, **summary))
                circuit = df[df["in_circuit"]]
                log.info("%s %-15s order %d: %s; %d heads + %d MLPs, score %.1f%% (re-check %.1f%%); "
                         "%.1f s per task: %s", model, summary["task"], order,
                         "solved" if summary["solved"] else "clean logit diff <= 0, no circuit",
                         summary["n_heads"], summary["n_mlps"], summary["final_score_pct"],
                         summary["recheck_score_pct"], summary["seconds"],
                         " ".join(circuit["component"]) if summary["solved"] else "-")
    circuits = pd.concat(rows, ignore_index=True)[CIRCUIT_COLUMNS] if rows else pd.DataFrame(columns=CIRCUIT_COLUMNS)
    write_parquet(circuits, out_circuits)
    write_parquet(pd.DataFrame(summaries, columns=SUMMARY_COLUMNS), out_summary)


def seqcont_overlap(model: str, circuits_path: str, successor_path: str, out: str) -> None:
    """Tables only: which components the tasks' circuits share, with successor scores."""
    from .compute import overlap

    shared = overlap(pd.read_parquet(circuits_path), pd.read_parquet(successor_path))
    for r in shared[shared["n_tasks"] >= 2].itertuples():
        log.info("%s shared: %s in %d tasks (%s), kept in %.0f%% of task x order runs, successor score %.2f",
                 model, r.component, r.n_tasks, r.tasks, 100 * r.order_frequency, r.successor_score)
    log.info("%s: %d components in some circuit, %d shared by >= 2 tasks", model, len(shared),
             int((shared["n_tasks"] >= 2).sum()))
    write_parquet(shared, out)


def figure_tasks(models: Sequence[str], tasks: Sequence[str], counts: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_tasks

    plot_tasks(list(models), _concat(tasks), _concat(counts), out_pdf)


def figure_heads(models: Sequence[str], components: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_heads

    plot_heads(list(models), _concat(components), out_pdf)


def figure_circuits(models: Sequence[str], circuits: Sequence[str], summary: Sequence[str], overlap: Sequence[str],
                    successor: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_circuits

    plot_circuits(list(models), _concat(circuits), _concat(summary), _concat(overlap), _concat(successor), out_pdf)
