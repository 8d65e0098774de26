"""The shared rules (``workflow/rules/models.smk``, ``data.smk``): prepare a model once,
sample the corpus tokens every study reads. Outputs are written atomically."""
from __future__ import annotations

import logging
from pathlib import Path

from .io import write_json

log = logging.getLogger("stages_of_inference")


def prepare(model: str, spec_entry: dict, out_manifest: str) -> None:
    from .models import ModelSpec, prepare_model

    spec = ModelSpec.from_config(model, spec_entry)
    log.info("preparing model %s (%s)", model, spec.source)
    manifest = prepare_model(spec, Path(out_manifest).parent)
    log.info("model %s ready at %s", model, manifest["path"])


def tokenize(manifest: str, corpus_entry: dict, out_tokens: str, out_record: str) -> None:
    import torch

    from .corpus import CorpusSpec, sample_sequences
    from .io import atomic_path
    from .models import load_prepared_tokenizer

    spec = CorpusSpec.from_config(corpus_entry)
    tokenizer = load_prepared_tokenizer(manifest)
    tokens, record = sample_sequences(spec, tokenizer)
    log.info("sampled %d sequences of %d tokens from %s", *tokens.shape, spec.source)
    with atomic_path(out_tokens) as tmp:
        torch.save(tokens, tmp)
    write_json(record, out_record)
