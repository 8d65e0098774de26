"""Rule functions of the self-repair study (``workflow/rules/self_repair.smk``).

``self_repair``              model + corpus -> results/{model}/self_repair{,_tokens,_neurons}.parquet
``plot_self_repair``         per-head tables -> figures/self_repair.pdf
``plot_self_repair_tokens``  per-head + per-token tables -> figures/self_repair_tokens.pdf
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

from ..core.io import read_tables, write_parquet

log = logging.getLogger("stages_of_inference")


def self_repair(model: str, manifest: str, corpus: str, record: str, settings: dict, runtime: dict,
                out_heads: str, out_tokens: str, out_neurons: str) -> None:
    from ..core.corpus import load_corpus
    from ..core.engine import engine_for_job
    from .compute import self_repair_study

    t0 = time.perf_counter()
    engine = engine_for_job(manifest, runtime)
    tokens, first = load_corpus(corpus, record)
    log.info("%s: model loaded in %.1f s (attention: %s)", model, time.perf_counter() - t0,
             engine.attn_implementation)
    res = self_repair_study(engine, tokens, first, model, settings)
    write_parquet(res.heads, out_heads)
    write_parquet(res.tokens, out_tokens)
    write_parquet(res.neurons, out_neurons)


def plot_self_repair(heads: Sequence[str], top_fraction: float, styles: dict, out_pdf: str) -> None:
    from .figures import plot_self_repair as draw

    draw(read_tables(heads), out_pdf, top_fraction, styles=styles)


def plot_self_repair_tokens(heads: Sequence[str], tokens: Sequence[str], figure_heads: int, styles: dict,
                            out_pdf: str) -> None:
    from .figures import plot_self_repair_tokens as draw

    draw(read_tables(tokens, filters=[("top", "==", True)]), read_tables(heads), out_pdf, figure_heads=figure_heads,
         styles=styles)
