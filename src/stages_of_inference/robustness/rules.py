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


def intervene(
    model: str,
    manifest: str,
    tokens_path: str,
    record_path: str,
    kind: str,
    chunk: str,
    runtime: dict,
    batch_size: int,
    out: str,
) -> None:
    import time

    from .compute import run_sweep
    from ..core.corpus import load_tokens
    from ..core.models import model_for_job

    t0 = time.perf_counter()
    net, attn = model_for_job(manifest, runtime)
    tokens, first = load_tokens(tokens_path, record_path)
    layers = parse_chunk(chunk)
    log.info("model loaded in %.1f s (attention: %s)", time.perf_counter() - t0, attn)
    log.info("%s %s layers %s on %d x %d tokens", model, kind, chunk, *tokens.shape)
    t1 = time.perf_counter()
    df = run_sweep(net, tokens, [(kind, layer) for layer in layers], batch_size=batch_size, first=first,
                   attn_implementation=attn, compile=runtime.get("compile", "auto"))
    log.info("sweep of %d interventions took %.1f s", len(layers), time.perf_counter() - t1)
    df.insert(0, "model", model)
    write_parquet(df, out)
    log.info("wrote %d rows to %s", len(df), out)


def aggregate(model: str, n_layers: int, chunk_files: Sequence[str], out_tokens: str, out_summary: str) -> None:
    import pandas as pd

    from ..core.metrics import summarise

    df = pd.concat([pd.read_parquet(f) for f in chunk_files], ignore_index=True)
    df["kind"] = df["kind"].astype("category")
    summary = summarise(df)
    summary["n_layers"] = n_layers
    summary["rel_depth"] = summary["layer"] / (n_layers - 1)
    write_parquet(df, out_tokens)
    write_parquet(summary, out_summary)
    log.info("%s: %d token rows, %d (kind, layer) groups", model, len(df), len(summary))


def figure3(summaries: Sequence[str], out_pdf: str) -> None:
    import pandas as pd

    from .figures import plot_fig3

    df = pd.concat([pd.read_parquet(f) for f in summaries], ignore_index=True)
    plot_fig3(df, out_pdf)


def robustness_table(summaries: Sequence[str], out_csv: str, out_md: str) -> None:
    import pandas as pd

    from .compute import robustness

    df = pd.concat([pd.read_parquet(f) for f in summaries], ignore_index=True)
    table = robustness(df)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    md = (
        "# Accuracy retained under layer interventions\n\n"
        "Fraction of the unmodified model's next-token accuracy kept when one block is dropped "
        "or two adjacent blocks are swapped, averaged over every intervention that does not "
        "touch the first or the last block (the paper reports 72-95%).\n\n"
        + table.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )
    write_text(md, out_md)
