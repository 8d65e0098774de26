"""Rule functions of the layer-edits study (``workflow/rules/edits.smk``).

``layer_edits``           model + corpus (+ the robustness study's per-token drops) ->
                          results/{model}/layer_edits{,_tokens}.parquet, cka.parquet,
                          drop_predictors{,_spearman}.parquet
``plot_cka``              CKA tables -> figures/cka.pdf
``plot_layer_edits``      edit summaries -> figures/layer_edits_{windows,painters,repeat}.pdf
``plot_drop_predictors``  predictor tables -> figures/drop_predictors.pdf
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

from ..core.io import read_tables, write_parquet

log = logging.getLogger("stages_of_inference")


def layer_edits(model: str, manifest: str, corpus: str, record: str, robustness: Sequence[str], settings: dict,
                runtime: dict, out_summary: str, out_tokens: str, out_cka: str, out_predictors: str,
                out_spearman: str) -> None:
    from ..core.corpus import load_corpus
    from ..core.engine import engine_for_job
    from .compute import edits_study

    t0 = time.perf_counter()
    engine = engine_for_job(manifest, runtime)
    tokens, first = load_corpus(corpus, record)
    log.info("%s: model loaded in %.1f s (attention: %s)", model, time.perf_counter() - t0,
             engine.attn_implementation)
    drops = None
    if robustness:
        drops = read_tables(robustness, filters=[("seq", "<", int(settings["n_sequences"])),
                                                 ("pos", "<", int(settings["seq_len"]))])
    t1 = time.perf_counter()
    res = edits_study(engine, tokens, first, model, settings, robustness_tokens=drops,
                      batch_size=settings["batch_size"], compile=runtime.get("compile", "auto"))
    log.info("%s: %d plans in %.1f s", model, int((res.summary["source"] == "edits").sum()), time.perf_counter() - t1)
    write_parquet(res.summary, out_summary)
    write_parquet(res.tokens, out_tokens)
    write_parquet(res.cka, out_cka)
    write_parquet(res.predictors, out_predictors)
    write_parquet(res.spearman, out_spearman)


def plot_cka(cka: Sequence[str], styles: dict, out_pdf: str) -> None:
    from .figures import plot_cka as draw

    draw(read_tables(cka), out_pdf, styles=styles)


def plot_layer_edits(summaries: Sequence[str], styles: dict, out_windows: str, out_painters: str,
                     out_repeat: str) -> None:
    from .figures import plot_painters, plot_repeats, plot_windows

    summary = read_tables(summaries)
    plot_windows(summary, out_windows, styles=styles)
    plot_painters(summary, out_painters, styles=styles)
    plot_repeats(summary, out_repeat, styles=styles)


def plot_drop_predictors(predictors: Sequence[str], spearman: Sequence[str], styles: dict, out_pdf: str) -> None:
    from .figures import plot_drop_predictors as draw

    draw(read_tables(predictors), read_tables(spearman), out_pdf, styles=styles)
