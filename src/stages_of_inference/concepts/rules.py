"""File-level entry points of the concept-features study (one function per rule).

Rules (workflow/rules/concepts.smk):

* ``concept_activations`` (runs the model): residual vectors of corpus tokens for SAE
  training and the stimulus sentences' token patterns, at ``concepts.layer``;
* ``concept_sae``: trains the SAE (safetensors + JSON config), its training curve, quality
  and per-feature firing rates;
* ``concept_probes``: feature selection x probes over seeded splits, summaries, findings;
* ``fig_sae_training``, ``fig_concept_methods``: figures from those tables.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.io import atomic_path, write_json, write_parquet
from .compute import (
    SPACES,
    ConceptSpec,
    concept_probes,
    corpus_residuals,
    findings,
    method_summary,
    resolve_layer,
    sae_patterns,
    sentence_ids,
    stimulus_patterns,
    window_means,
)
from .sae import SAEConfig, SparseAutoencoder, input_scale, train_sae

log = logging.getLogger(__name__)

# concepts.sae keys that are not SAEConfig fields (batch_size: corpus windows per forward
# pass; the SAE's optimisation batch is batch_size_tokens)
SAE_DEFAULTS = dict(n_sequences=64, seq_len=128, corpus_seed=1, batch_size=8, expansion=2, holdout_fraction=0.1,
                    batch_size_tokens=256, outlier_norm=10.0)


def _save_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})


def _load_tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_stimuli(directory: str, concepts: Sequence[str]) -> pd.DataFrame:
    """The stimulus sentences: ``<concept>_positive.txt`` and ``<concept>_negative.txt``, one
    sentence a line; line i of both files is a matched pair."""
    rows = []
    for concept in concepts:
        files = {label: Path(directory) / f"{concept}_{name}.txt" for label, name in ((1, "positive"), (0, "negative"))}
        texts = {}
        for label, path in files.items():
            if not path.exists():
                raise FileNotFoundError(f"concept {concept!r}: no stimulus file {path}")
            texts[label] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(texts[1]) != len(texts[0]):
            raise ValueError(f"concept {concept!r}: {len(texts[1])} positive but {len(texts[0])} negative "
                             f"sentences; the files must be line-matched pairs.")
        for label in (1, 0):
            for pair, text in enumerate(texts[label]):
                rows.append({"concept": concept, "label": label, "pair_id": pair, "text": text})
    df = pd.DataFrame(rows)
    df.insert(0, "sentence_id", np.arange(len(df)))
    return df


def concept_activations(model: str, manifest: str, corpus: dict, params: dict, runtime: dict, stimuli_dir: str,
                        out_residuals: str, out_patterns: str, out_sentences: str) -> None:
    from ..core.corpus import CorpusSpec, sample_sequences
    from ..core.engine import engine_for_job
    from ..core.models import load_prepared_tokenizer

    spec = ConceptSpec.from_config(params)
    sae_params = {**SAE_DEFAULTS, **(params.get("sae") or {})}
    t0 = time.perf_counter()
    tokenizer = load_prepared_tokenizer(manifest)
    engine = engine_for_job(manifest, runtime)
    layer = resolve_layer(spec.layer, engine.n_layers)
    log.info("%s: model loaded in %.1f s; residual stream entering block %d of %d", model,
             time.perf_counter() - t0, layer, engine.n_layers)

    t1 = time.perf_counter()
    cspec = CorpusSpec.from_config({**corpus, "n_sequences": sae_params["n_sequences"],
                                    "seq_len": sae_params["seq_len"], "seed": sae_params["corpus_seed"]})
    tokens, record = sample_sequences(cspec, tokenizer)
    first = 1 if record["has_bos"] else 0
    resid = corpus_residuals(engine, tokens, layer, first, sae_params["batch_size"])
    _save_tensors({"residuals": resid}, out_residuals,
                  {"model": model, "layer": layer, "n_sequences": len(tokens), "seq_len": tokens.shape[1],
                   "corpus_seed": cspec.seed, "first": first})
    log.info("%s: %d corpus tokens (%d x %d windows, BOS excluded) in %.1f s", model, len(resid), *tokens.shape,
             time.perf_counter() - t1)

    t2 = time.perf_counter()
    sentences = load_stimuli(stimuli_dir, spec.concepts)
    ids = sentence_ids(tokenizer, sentences["text"].tolist())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    patterns, lengths = stimulus_patterns(engine, ids, layer, spec.window, first, spec.batch_size, pad)
    sentences["n_tokens"] = [len(i) - first for i in ids]
    sentences["window_tokens"] = lengths
    sentences.insert(0, "model", model)
    sentences["layer"] = layer
    _save_tensors({"patterns": patterns, "lengths": torch.as_tensor(lengths)}, out_patterns,
                  {"model": model, "layer": layer, "window": spec.window})
    write_parquet(sentences, out_sentences)
    log.info("%s: %d stimulus sentences (%s), %.1f tokens on average (window %d) in %.1f s", model,
             len(sentences), ", ".join(spec.concepts), sentences["n_tokens"].mean(), spec.window,
             time.perf_counter() - t2)


def sae_config(params: dict, d_in: int, scale: float) -> SAEConfig:
    p = {**SAE_DEFAULTS, **(params.get("sae") or {})}
    skip = ("d_in", "d_sae", "input_scale", "batch_size")
    known = {k: p[k] for k in SAEConfig.__dataclass_fields__ if k in p and k not in skip}
    return SAEConfig(d_in=d_in, d_sae=int(p["expansion"]) * d_in, input_scale=scale,
                     batch_size=int(p["batch_size_tokens"]), **known)


def concept_sae(model: str, residuals: str, params: dict, runtime: dict, out_sae: str, out_config: str,
                out_training: str, out_quality: str, out_features: str) -> None:
    from ..core.models import set_threads

    set_threads(runtime.get("threads"))
    p = {**SAE_DEFAULTS, **(params.get("sae") or {})}
    x = _load_tensors(residuals)["residuals"].float()
    # "massive activations": a few positions (e.g. after an EOS separator) have residual norms
    # ~100x the median; they would dominate the input scale and the explained variance
    norms = x.norm(dim=1)
    limit = float(p["outlier_norm"]) * float(norms.median())
    keep = norms <= limit if p["outlier_norm"] else torch.ones(len(x), dtype=torch.bool)
    n_outliers = int((~keep).sum())
    log.info("%s: %d of %d tokens dropped as outliers (norm > %.0f = %g x median; largest %.0f)", model,
             n_outliers, len(x), limit, p["outlier_norm"], float(norms.max()))
    x = x[keep]
    g = torch.Generator().manual_seed(int(p.get("seed", 0)))
    order = torch.randperm(len(x), generator=g)
    n_val = int(round(p["holdout_fraction"] * len(x)))
    x_val, x_train = x[order[:n_val]], x[order[n_val:]]
    scale = input_scale(x_train)
    cfg = sae_config(params, x.shape[1], scale)
    t0 = time.perf_counter()
    result = train_sae(x_train * scale, cfg, x_val=x_val * scale)
    seconds = time.perf_counter() - t0
    _save_tensors(result.sae.state_tensors(), out_sae, {"model": model, "format": "stages_of_inference SAE"})
    write_json({"model": model, **cfg.to_dict()}, out_config)
    history = pd.DataFrame(result.history)
    history.insert(0, "model", model)
    write_parquet(history, out_training)
    quality = pd.DataFrame([{"model": model, "kind": cfg.kind, "d_in": cfg.d_in, "d_sae": cfg.d_sae,
                             "k": cfg.k if cfg.kind == "topk" else None, "epochs": cfg.epochs,
                             "train_seconds": seconds, "outlier_tokens_dropped": n_outliers,
                             **result.quality}])
    write_parquet(quality, out_quality)
    write_parquet(pd.DataFrame({"model": model, "feature": np.arange(cfg.d_sae),
                                "firing_rate": result.firing_rate.numpy()}), out_features)
    log.info("%s: SAE trained in %.1f s", model, seconds)


def load_sae(sae_path: str, config_path: str) -> SparseAutoencoder:
    cfg = json.loads(Path(config_path).read_text())
    cfg.pop("model", None)
    return SparseAutoencoder.from_tensors(SAEConfig(**cfg), _load_tensors(sae_path))


def concept_probes_rule(model: str, patterns_path: str, sentences_path: str, sae_path: str, sae_config_path: str,
                        params: dict, runtime: dict, out_probes: str, out_methods: str, out_findings: str) -> None:
    from ..core.models import set_threads

    set_threads(runtime.get("threads"))
    spec = ConceptSpec.from_config(params)
    tensors = _load_tensors(patterns_path)
    patterns, lengths = tensors["patterns"], tensors["lengths"].numpy()
    sentences = pd.read_parquet(sentences_path)
    sae = load_sae(sae_path, sae_config_path)
    frames = []
    t0 = time.perf_counter()
    for concept in spec.concepts:
        rows = np.flatnonzero(sentences["concept"].to_numpy() == concept)
        raw = patterns[rows]
        feats = sae_patterns(sae, raw, lengths[rows])
        spaces = {"raw": (raw, window_means(raw, lengths[rows])),
                  "sae": (feats, window_means(feats, lengths[rows]))}
        assert tuple(spaces) == SPACES
        frames.append(concept_probes(model, concept, spaces, sentences["label"].to_numpy()[rows],
                                     sentences["pair_id"].to_numpy()[rows], spec))
        log.info("%s: concept %r done (%.1f s so far)", model, concept, time.perf_counter() - t0)
    probes = pd.concat(frames, ignore_index=True)
    summary = method_summary(probes)
    found = findings(probes)
    for r in summary.itertuples():
        log.info("%s %-8s %-4s %-19s held-out accuracy %.3f [%.3f, %.3f]", model, r.concept, r.space, r.method,
                 r.test_accuracy, r.ci_low, r.ci_high)
    for r in found[found["concept"] == "pooled"].itertuples():
        log.info("%s finding %-30s difference %+.3f [%+.3f, %+.3f]", model, r.label, r.difference, r.ci_low,
                 r.ci_high)
    write_parquet(probes, out_probes)
    write_parquet(summary, out_methods)
    write_parquet(found, out_findings)


def _concat(paths: Sequence[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def figure_sae_training(models: Sequence[str], training: Sequence[str], quality: Sequence[str],
                        features: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_sae_training

    plot_sae_training(list(models), _concat(training), _concat(quality), _concat(features), out_pdf)


def figure_concept_methods(models: Sequence[str], methods: Sequence[str], found: Sequence[str], out_pdf: str) -> None:
    from .figures import plot_concept_methods

    plot_concept_methods(list(models), _concat(methods), _concat(found), out_pdf)
