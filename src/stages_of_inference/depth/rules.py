"""Rule functions for Figures 4-8 and Table 2 (called by ``workflow/scripts/*.py``).

``layer_stats``  model + corpus -> per-token and per-layer statistics (one hooked pass)
``neurons``      model weights  -> neuron classes and the model's Table 2 row
``plot_depth``   tables         -> figures/fig{4,5,6,7,8}.pdf
``table2``       model rows     -> figures/table2.csv + .md

Each only reads its inputs, calls ``compute`` / ``figures`` / core, and writes its outputs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from ..core.io import atomic_path, read_tables, write_json, write_parquet, write_text

log = logging.getLogger("stages_of_inference")


def layer_stats(model: str, manifest: str, corpus: str, record: str, runtime: dict, batch_size: int,
                out_summary: str, out_tokens: str) -> None:
    from ..core.corpus import load_corpus
    from ..core.engine import engine_for_job
    from .compute import extract_layer_stats, summarise_layer_stats

    engine = engine_for_job(manifest, runtime, "eager")  # eager attention: the patterns are hooked
    tokens, first = load_corpus(corpus, record)
    log.info("%s: layer statistics on %d x %d tokens, %d layers", model, *tokens.shape, engine.n_layers)
    df = extract_layer_stats(engine, tokens, batch_size=batch_size, first=first)
    df.insert(0, "model", model)
    summary = summarise_layer_stats(df, engine.n_layers, engine.d_vocab)
    write_parquet(df, out_tokens)
    write_parquet(summary, out_summary)
    log.info("%s: wrote %d token rows, %d layers", model, len(df), len(summary))


def neurons(model: str, spec: dict, manifest: str, runtime: dict, out_neurons: str, out_info: str) -> None:
    from ..core.engine import engine_for_job
    from ..core.models import ModelSpec, model_table_row, resolve_device
    from ..core.neurons import neuron_classes

    # float32 whatever runtime.dtype says (as before): the classes come from the weights alone
    engine = engine_for_job(manifest, {**runtime, "dtype": "float32"})
    info = model_table_row(ModelSpec.from_config(model, spec), engine.model)
    table = neuron_classes(engine, model, device=resolve_device(runtime.get("device", "auto")))
    write_parquet(table, out_neurons)
    write_json(info, out_info)


def plot_depth(number: int, summaries: Sequence[str], neurons: Sequence[str], styles: dict, out_pdf: str) -> None:
    from .compute import neuron_type_counts
    from .figures import plot_depth_metric, plot_fig4, plot_fig6, plot_fig8

    summary = read_tables(summaries)
    if number == 4:
        plot_fig4(summary, out_pdf, styles=styles)
    elif number == 6:
        plot_fig6(summary, neuron_type_counts(summary, read_tables(neurons)), out_pdf, styles=styles)
    elif number == 8:
        plot_fig8(summary, out_pdf, styles=styles)
    else:
        plot_depth_metric(summary, number, out_pdf, styles=styles)
    log.info("figure %d: %d models -> %s", number, summary["model"].nunique(), out_pdf)


def table2(infos: Sequence[str], out_csv: str, out_md: str) -> None:
    from .compute import table2_frame
    from .figures import table2_markdown

    table = table2_frame(json.loads(Path(p).read_text()) for p in infos)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_text(table2_markdown(table), out_md)
