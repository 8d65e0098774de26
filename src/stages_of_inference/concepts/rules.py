"""File-level entry points of the concept-features study (one function per rule): read
the inputs, call :mod:`.compute` / :mod:`.sae` / :mod:`.figures`, write the outputs.

Rules (workflow/rules/concepts.smk):

* ``concept_stimuli`` (runs the model): residual vectors of corpus tokens for SAE
  training and the stimulus sentences' token patterns, at ``concepts.layer``;
* ``concept_sae``: trains the SAE (safetensors + JSON config), its training curve, quality
  and per-feature firing rates;
* ``concept_probes``: feature selection x probes over seeded splits, summaries, findings;
* ``plot_sae_training``, ``plot_concept_methods``: figures from those tables.

The study's modules are imported inside the functions: a rule's code digest
(core/digest.py) then covers only the modules its function runs (the figure rules' not
the model run's).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from ..core.io import atomic_path, read_tables, write_json, write_parquet

log = logging.getLogger(__name__)


def _save_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})


def _load_tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_sae(sae_path, config_path):
    """The SAE written by ``concept_sae`` (safetensors + JSON config)."""
    from .sae import SAEConfig, SparseAutoencoder

    cfg = json.loads(Path(config_path).read_text())
    cfg.pop("model", None)
    return SparseAutoencoder.from_tensors(SAEConfig(**cfg), _load_tensors(sae_path))


def concept_stimuli(model: str, manifest: str, stimuli: Sequence[str], corpus: dict, settings: dict, runtime: dict,
                    out_residuals: str, out_patterns: str, out_sentences: str) -> None:
    import torch

    from ..core.engine import engine_for_job
    from ..core.models import load_prepared_tokenizer
    from .compute import load_stimuli, resolve_layer, sae_corpus_residuals, stimulus_activations
    from .settings import ConceptSettings, SAESettings

    spec = ConceptSettings.from_config(settings)
    sae = SAESettings.from_config(settings.get("sae"))
    tokenizer = load_prepared_tokenizer(manifest)
    engine = engine_for_job(manifest, runtime)
    layer = resolve_layer(spec.layer, engine.n_layers)
    log.info("%s: residual stream entering block %d of %d", model, layer, engine.n_layers)

    residuals, record = sae_corpus_residuals(engine, tokenizer, corpus, sae, layer)
    _save_tensors({"residuals": residuals}, out_residuals, {"model": model, **record})

    sentences = load_stimuli(stimuli, spec.concepts)
    patterns, lengths, sentences = stimulus_activations(model, engine, tokenizer, sentences, spec, layer)
    _save_tensors({"patterns": patterns, "lengths": torch.as_tensor(lengths)}, out_patterns,
                  {"model": model, "layer": layer, "window": spec.window})
    write_parquet(sentences, out_sentences)


def concept_sae(model: str, residuals: str, settings: dict, runtime: dict, out_sae: str, out_config: str,
                out_training: str, out_quality: str, out_features: str) -> None:
    from ..core.models import set_threads
    from .sae import fit_sae, sae_tables
    from .settings import SAESettings

    set_threads(runtime.get("threads"))
    fit = fit_sae(_load_tensors(residuals)["residuals"], SAESettings.from_config(settings.get("sae")))
    _save_tensors(fit.result.sae.state_tensors(), out_sae, {"model": model, "format": "stages_of_inference SAE"})
    write_json({"model": model, **fit.config.to_dict()}, out_config)
    history, quality, features = sae_tables(model, fit)
    write_parquet(history, out_training)
    write_parquet(quality, out_quality)
    write_parquet(features, out_features)
    log.info("%s: SAE trained in %.1f s", model, fit.seconds)


def concept_probes(model: str, patterns: str, sentences: str, sae: str, sae_config: str, settings: dict,
                   runtime: dict, out_probes: str, out_methods: str, out_findings: str) -> None:
    import pandas as pd

    from ..core.models import set_threads
    from .compute import concept_results
    from .settings import ConceptSettings

    set_threads(runtime.get("threads"))
    spec = ConceptSettings.from_config(settings)
    tensors = _load_tensors(patterns)
    probes, summary, found = concept_results(model, tensors["patterns"], tensors["lengths"].numpy(),
                                             pd.read_parquet(sentences), load_sae(sae, sae_config), spec)
    write_parquet(probes, out_probes)
    write_parquet(summary, out_methods)
    write_parquet(found, out_findings)


def plot_sae_training(models: Sequence[str], training: Sequence[str], quality: Sequence[str],
                      features: Sequence[str], styles: dict, out_pdf: str) -> None:
    from . import figures

    figures.plot_sae_training(list(models), read_tables(training), read_tables(quality), read_tables(features),
                              out_pdf, styles=styles)


def plot_concept_methods(models: Sequence[str], methods: Sequence[str], findings: Sequence[str],
                         styles: dict, out_pdf: str) -> None:
    from . import figures

    figures.plot_concept_methods(list(models), read_tables(methods), read_tables(findings), out_pdf, styles=styles)
