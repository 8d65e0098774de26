"""Rule functions for Figures 4-8 and Table 2 (called by ``workflow/scripts/*.py``).

``extract``  model + tokens -> per-token and per-layer statistics (one hooked pass)
``neurons``  model weights  -> neuron classes and the model's Table 2 row
``figure``   tables         -> figures/fig{4,5,6,7,8}.pdf
``table2``   model rows     -> figures/table2.csv + .md
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.io import atomic_path, write_json, write_parquet, write_text

log = logging.getLogger("stages_of_inference")


def extract(model: str, manifest: str, tokens_path: str, record_path: str, runtime: dict,
            batch_size: int, out_tokens: str, out_summary: str) -> None:
    from ..core.corpus import load_tokens
    from .compute import extract_layer_stats, summarise_layer_stats
    from ..core.models import bridge_for_job

    bridge = bridge_for_job(manifest, runtime)  # eager attention: the patterns are hooked
    tokens, first = load_tokens(tokens_path, record_path)
    n_layers = bridge.cfg.n_layers
    log.info("%s: layer statistics on %d x %d tokens, %d layers", model, *tokens.shape, n_layers)
    df = extract_layer_stats(bridge, tokens, batch_size=batch_size, first=first)
    df.insert(0, "model", model)
    summary = summarise_layer_stats(df, n_layers)
    write_parquet(df, out_tokens)
    write_parquet(summary, out_summary)
    log.info("%s: wrote %d token rows, %d layers", model, len(df), len(summary))


def neurons(model: str, spec_entry: dict, manifest: str, runtime: dict, out_neurons: str, out_info: str) -> None:
    from ..core.models import ModelSpec, bridge_for_job, model_table_row, resolve_device
    from ..core.neurons import neuron_table, type_counts

    bridge = bridge_for_job(manifest, runtime, dtype="float32")
    # the Table 2 row first: folding unties tied embeddings, which would count them twice
    info = model_table_row(ModelSpec.from_config(model, spec_entry), bridge)
    table = neuron_table(bridge, model, device=resolve_device(runtime.get("device", "auto")))
    counts = type_counts(table)
    log.info("%s neuron types per layer:\n%s", model,
             counts[["layer", "prediction", "suppression"]].to_string(index=False))
    write_parquet(table, out_neurons)
    write_json(info, out_info)


def _concat(paths: Sequence[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def figure(number: int, summaries: Sequence[str], out_pdf: str, neuron_tables: Sequence[str] = ()) -> None:
    from .figures import plot_depth_metric, plot_fig6
    from ..core.neurons import type_counts

    summary = _concat(summaries)
    if number == 6:
        n_layers = summary.groupby("model")["n_layers"].first()
        counts = pd.concat(
            [type_counts(t, int(n_layers[t["model"].iloc[0]])) for t in map(pd.read_parquet, neuron_tables)],
            ignore_index=True,
        )
        plot_fig6(summary, counts, out_pdf)
    else:
        plot_depth_metric(summary, number, out_pdf)
    log.info("figure %d: %d models -> %s", number, summary["model"].nunique(), out_pdf)


def table2(infos: Sequence[str], out_csv: str, out_md: str) -> None:
    from .figures import table2_markdown

    table = pd.DataFrame([json.loads(Path(p).read_text()) for p in infos])
    table = table[["model", "family", "parameters", "layers", "d_model", "heads"]]
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_text(table2_markdown(table), out_md)
