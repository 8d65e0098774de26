"""Rule functions of the robustness study (``workflow/rules/robustness.smk``): drop/swap
chunks of layers, aggregate them, Figure 3 and the robustness table."""
from __future__ import annotations

import logging
from typing import Sequence

from ..core.io import atomic_path, write_parquet, write_text

log = logging.getLogger("stages_of_inference")


# -- jobs: chunks of layers, named by the {chunk} wildcard -------------------------------


def chunk_layers(n_layers: int, kind: str, layers_per_job: int) -> list[tuple[int, int]]:
    """Split a kind's valid layers into inclusive ``(first, last)`` ranges."""
    from ..core.engine import layers_for

    layers = layers_for(kind, n_layers)
    if layers_per_job < 1:
        raise ValueError(f"interventions.layers_per_job is {layers_per_job}; use at least 1.")
    return [
        (layers[i], layers[min(i + layers_per_job, len(layers)) - 1])
        for i in range(0, len(layers), layers_per_job)
    ]


def chunk_name(first: int, last: int) -> str:
    return f"{first:03d}-{last:03d}"


def parse_chunk(chunk: str) -> list[int]:
    first, last = (int(x) for x in chunk.split("-"))
    return list(range(first, last + 1))


# -- rules -------------------------------------------------------------------------------


def interventions_chunk(model: str, manifest: str, corpus: str, record: str, kind: str, chunk: str,
                        runtime: dict, batch_size: int, out: str) -> None:
    import time

    from ..core.corpus import load_corpus
    from ..core.engine import engine_for_job
    from .compute import run_sweep

    t0 = time.perf_counter()
    engine = engine_for_job(manifest, runtime)
    ids, first = load_corpus(corpus, record)
    layers = parse_chunk(chunk)
    log.info("model loaded in %.1f s (attention: %s)", time.perf_counter() - t0, engine.attn_implementation)
    log.info("%s %s layers %s on %d x %d tokens", model, kind, chunk, *ids.shape)
    t1 = time.perf_counter()
    df = run_sweep(engine, ids, [(kind, layer) for layer in layers], batch_size=batch_size, first=first,
                   compile=runtime.get("compile", "auto"))
    log.info("sweep of %d interventions took %.1f s", len(layers), time.perf_counter() - t1)
    df.insert(0, "model", model)
    write_parquet(df, out)
    log.info("wrote %d rows to %s", len(df), out)


def interventions(model: str, n_layers: int, chunks: Sequence[str], out_summary: str, out_tokens: str) -> None:
    from ..core.io import read_tables
    from .compute import summarise_interventions

    df = read_tables(chunks)
    summary = summarise_interventions(df, n_layers)
    write_parquet(summary, out_summary)
    write_parquet(df, out_tokens)
    log.info("%s: %d token rows, %d (kind, layer) groups", model, len(df), len(summary))


def plot_fig3(summaries: Sequence[str], styles: dict, out_pdf: str) -> None:
    from ..core.io import read_tables
    from .figures import plot_fig3 as draw

    draw(read_tables(summaries), out_pdf, styles=styles)


def table_robustness(summaries: Sequence[str], out_csv: str, out_md: str) -> None:
    from ..core.io import read_tables
    from .compute import robustness
    from .figures import robustness_markdown

    table = robustness(read_tables(summaries))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_text(robustness_markdown(table), out_md)
