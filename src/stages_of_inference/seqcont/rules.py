"""Rule functions of the sequence-continuation study (``workflow/rules/seqcont.smk``): file
paths in, tables and figures out; the study's loops live in ``compute.py``/``prompts.py``.

``seqcont_prompts``        tokenizer      -> results/{model}/seqcont_{prompts,counts}.parquet
``seqcont_components``     model + prompts -> results/{model}/seqcont_{tasks,components,successor}.parquet
``seqcont_circuits``       model + prompts -> results/{model}/seqcont_{circuits,circuit_summary}.parquet
``seqcont_overlap``        tables          -> results/{model}/seqcont_overlap.parquet
``plot_seqcont_tasks``, ``plot_seqcont_heads``, ``plot_seqcont_circuits``  tables -> figures/seqcont_*.pdf
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import pandas as pd

from ..core.io import read_tables, write_parquet

log = logging.getLogger(__name__)


def _engine(model: str, manifest: str, runtime: dict):
    from ..core.engine import engine_for_job

    t0 = time.perf_counter()
    engine = engine_for_job(manifest, runtime)
    log.info("%s: model loaded in %.1f s (attention: %s)", model, time.perf_counter() - t0,
             engine.attn_implementation)
    return engine


def seqcont_prompts(model: str, manifest: str, settings: dict, out_prompts: str, out_counts: str) -> None:
    """Tokenizer only: the seeded task prompts that survive the single-token filter."""
    from ..core.models import load_prepared_tokenizer
    from .prompts import SeqcontSettings, model_prompts

    prompts, counts = model_prompts(load_prepared_tokenizer(manifest), SeqcontSettings.from_config(settings), model)
    write_parquet(prompts, out_prompts)
    write_parquet(counts, out_counts)


def seqcont_components(model: str, manifest: str, prompts: str, settings: dict, runtime: dict,
                       out_tasks: str, out_components: str, out_successor: str) -> None:
    """Accuracy and logit difference per task; every head's and MLP's mean-ablation
    effect; every head's successor score per item family."""
    from ..core.models import load_prepared_tokenizer
    from .compute import component_study
    from .prompts import SeqcontSettings

    settings = SeqcontSettings.from_config(settings)
    prompts_df = pd.read_parquet(prompts)
    tasks, components, successor = component_study(_engine(model, manifest, runtime), prompts_df,
                                                   load_prepared_tokenizer(manifest), settings, model)
    write_parquet(tasks, out_tasks)
    write_parquet(components, out_components)
    write_parquet(successor, out_successor)


def seqcont_circuits(model: str, manifest: str, prompts: str, settings: dict, runtime: dict,
                     out_circuits: str, out_summary: str) -> None:
    """Iterative mean-ablation pruning per circuit task and seeded order; the re-check."""
    from .compute import circuit_study
    from .prompts import SeqcontSettings

    settings = SeqcontSettings.from_config(settings)
    prompts_df = pd.read_parquet(prompts)
    circuits, summary = circuit_study(_engine(model, manifest, runtime), prompts_df, settings, model)
    write_parquet(circuits, out_circuits)
    write_parquet(summary, out_summary)


def seqcont_overlap(model: str, circuits: str, successor: str, successor_score: str, out: str) -> None:
    """Tables only: which components the tasks' circuits share, with successor scores."""
    from .compute import model_overlap

    write_parquet(model_overlap(model, pd.read_parquet(circuits), pd.read_parquet(successor), successor_score), out)


def plot_seqcont_tasks(models: Sequence[str], tasks: Sequence[str], counts: Sequence[str], styles: dict,
                       out_pdf: str) -> None:
    from .figures import plot_tasks

    plot_tasks(list(models), read_tables(tasks), read_tables(counts), out_pdf, styles=styles)


def plot_seqcont_heads(models: Sequence[str], components: Sequence[str], styles: dict, out_pdf: str) -> None:
    from .figures import plot_heads

    plot_heads(list(models), read_tables(components), out_pdf, styles=styles)


def plot_seqcont_circuits(models: Sequence[str], circuits: Sequence[str], summary: Sequence[str],
                          overlap: Sequence[str], successor: Sequence[str], successor_score: str, styles: dict,
                          out_pdf: str) -> None:
    from .figures import plot_circuits

    plot_circuits(list(models), read_tables(circuits), read_tables(summary), read_tables(overlap),
                  read_tables(successor), out_pdf, successor_score=successor_score, styles=styles)
