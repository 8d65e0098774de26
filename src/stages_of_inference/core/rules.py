"""The shared rules (``workflow/rules/models.smk``, ``data.smk``): prepare a model once,
sample the corpus token ids every study reads. Outputs are written atomically."""
from __future__ import annotations

import logging
from pathlib import Path

from .io import atomic_path, write_json

log = logging.getLogger("stages_of_inference")


def prepare_model(model: str, spec: dict, out_manifest: str) -> None:
    from .models import ModelSpec
    from .models import prepare_model as prepare

    model_spec = ModelSpec.from_config(model, spec)
    log.info("preparing model %s (%s)", model, model_spec.source)
    manifest = prepare(model_spec, Path(out_manifest).parent)
    log.info("model %s ready (%s)", model, manifest["path"])


def corpus(manifest: str, corpus: dict, out_corpus: str, out_record: str) -> None:
    import torch

    from .corpus import CorpusSettings, sample_sequences
    from .models import load_prepared_tokenizer

    spec = CorpusSettings.from_config(corpus)
    tokenizer = load_prepared_tokenizer(manifest)
    ids, record = sample_sequences(spec, tokenizer)
    log.info("sampled %d sequences of %d tokens from %s", *ids.shape, spec.source)
    with atomic_path(out_corpus) as tmp:
        torch.save(ids, tmp)
    write_json(record, out_record)
