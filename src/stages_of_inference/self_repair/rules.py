"""Rule functions of the self-repair study (called by ``workflow/scripts/self_repair*.py``).

``self_repair``          model + tokens -> results/{model}/self_repair{,_tokens,_neurons}.parquet
``self_repair_figures``  tables         -> figures/self_repair.pdf, figures/self_repair_tokens.pdf
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import pandas as pd

from ..core.io import write_parquet

log = logging.getLogger("stages_of_inference")


def self_repair(model: str, manifest: str, tokens_path: str, record_path: str, runtime: dict,
                settings: dict, out_heads: str, out_tokens: str, out_neurons: str) -> None:
    from ..core.corpus import load_tokens
    from ..core.engine import engine_for_job
    from .compute import run_self_repair

    t0 = time.perf_counter()
    attn = runtime.get("attn_implementation", "sdpa")
    engine = engine_for_job(manifest, runtime, attn if attn in ("sdpa", "eager") else "sdpa")  # hooks need plain modules
    tokens, first = load_tokens(tokens_path, record_path)
    tokens = tokens[: settings["n_sequences"], : settings["seq_len"]]
    log.info("%s: self-repair of %d x %d heads on %d x %d tokens (%s ablation, %s target); "
             "model loaded in %.1f s", model, engine.n_layers, engine.n_heads, *tokens.shape,
             settings["ablation"], settings["target"], time.perf_counter() - t0)
    t1 = time.perf_counter()
    res = run_self_repair(engine, tokens, first, ablation=settings["ablation"], target=settings["target"],
                          top_fraction=settings["top_fraction"], n_top_neurons=settings["n_top_neurons"],
                          batch_size=settings["batch_size"])
    log.info("all heads took %.1f s", time.perf_counter() - t1)
    n_layers = engine.n_layers
    for df in (res.heads, res.tokens, res.neurons):
        df.insert(0, "model", model)
    res.heads["n_layers"] = n_layers
    res.heads["ablation"] = settings["ablation"]
    res.heads["target"] = settings["target"]
    h = res.heads
    log.info("%s: %d of %d heads repair more than half their direct effect (top tokens); median "
             "final-norm share of DE %.3f (clipped per token), of the repair %.3f",
             model, int(((h.self_repair > h.de / 2) & (h.de > 0)).sum()), len(h),
             h.norm_pct_de.median(), h.norm_share.median())
    write_parquet(res.heads, out_heads)
    write_parquet(res.tokens, out_tokens)
    write_parquet(res.neurons, out_neurons)


def _concat(paths: Sequence[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def self_repair_figures(heads: Sequence[str], tokens: Sequence[str], top_fraction: float,
                        n_heads: int, out_pdf: str, out_tokens_pdf: str) -> None:
    from .figures import plot_self_repair, plot_self_repair_tokens

    heads_df = _concat(heads)
    tokens_df = pd.concat([pd.read_parquet(p, filters=[("top", "==", True)]) for p in tokens],
                          ignore_index=True)
    plot_self_repair(heads_df, out_pdf, top_fraction)
    plot_self_repair_tokens(tokens_df, heads_df, out_tokens_pdf, n_heads=n_heads)
    log.info("self-repair figures: %d models", heads_df["model"].nunique())
