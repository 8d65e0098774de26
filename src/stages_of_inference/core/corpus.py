"""Corpus sources and seeded, fixed-length token sequences.

Sources (``corpus.source`` in the config):

* ``embedded`` - the English documentation text CPython ships in ``pydoc_data.topics``
  (~465k characters; present on every Python install, no download);
* a path to a local ``.txt`` file (documents separated by blank lines) or ``.jsonl`` file
  (one JSON object per line, text under ``text_field``);
* ``hf:<dataset name>`` - a Hugging Face dataset, streamed (needs network or a cache).

Every sequence is ``[BOS] + seq_len - 1`` corpus tokens when the tokenizer has a BOS token
(otherwise ``seq_len`` corpus tokens). Windows are cut from the concatenated token stream
of the documents (joined by the EOS token when there is one) and drawn with a seeded
generator; the chosen window offsets are recorded next to the tokens.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

from .settings import Settings

log = logging.getLogger(__name__)


class CorpusSettings(Settings):
    """The ``corpus`` config section (keys, defaults and allowed values: config/schema.yaml)."""

    section: ClassVar[str] = "corpus"


def embedded_documents() -> list[str]:
    """The pydoc topic texts, in a fixed (sorted-key) order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def iter_documents(spec: CorpusSettings) -> Iterator[str]:
    source = spec.source
    if source == "embedded":
        yield from embedded_documents()
        return
    if source.startswith("hf:"):
        from datasets import load_dataset

        name = source[3:]
        try:
            dataset = load_dataset(name, split=spec.split, streaming=True)
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds
            raise RuntimeError(
                f"corpus.source {source!r}: could not stream dataset {name!r} ({exc}). "
                f"Without network access use a local .txt/.jsonl file or `embedded`."
            ) from exc
        for i, row in enumerate(dataset):
            if i >= spec.max_documents:
                break
            yield row[spec.text_field]
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"corpus.source {source!r} is not `embedded`, `hf:<name>` nor an existing file."
        )
    if path.suffix == ".jsonl":
        with path.open() as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if spec.text_field not in row:
                    raise KeyError(
                        f"{path}:{lineno} has no field {spec.text_field!r}; set corpus.text_field."
                    )
                yield row[spec.text_field]
    elif path.suffix == ".txt":
        text = path.read_text()
        for doc in text.split("\n\n"):
            if doc.strip():
                yield doc
    else:
        raise ValueError(f"corpus.source {source!r}: use a .txt or .jsonl file.")


def token_stream(documents: Iterable[str], tokenizer) -> list[int]:
    """Concatenate the documents' tokens, separated by EOS when the tokenizer has one."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return ids


def sample_sequences(spec: CorpusSettings, tokenizer):
    """Draw ``n_sequences`` windows; returns ``(tokens [n, seq_len] int64, record dict)``."""
    import torch

    bos = tokenizer.bos_token_id
    body = spec.seq_len - (1 if bos is not None else 0)
    stream = torch.tensor(token_stream(iter_documents(spec), tokenizer), dtype=torch.long)
    n_windows = len(stream) // body
    if n_windows < spec.n_sequences:
        raise ValueError(
            f"The corpus {spec.source!r} gives {len(stream)} tokens, {n_windows} windows of "
            f"{body}; corpus.n_sequences={spec.n_sequences} is too many. Lower n_sequences "
            f"or seq_len, or use a larger corpus."
        )
    generator = torch.Generator().manual_seed(spec.seed)
    windows = torch.randperm(n_windows, generator=generator)[: spec.n_sequences].sort().values
    starts = windows * body
    rows = torch.stack([stream[s : s + body] for s in starts.tolist()])
    if bos is not None:
        rows = torch.cat([torch.full((len(rows), 1), bos, dtype=torch.long), rows], dim=1)
    record = {
        "corpus": spec.to_dict(),
        "stream_tokens": len(stream),
        "window_starts": starts.tolist(),
        "bos_token_id": bos,
        "has_bos": bos is not None,
        "tokenizer": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
    }
    return rows, record


def train_bytelevel_bpe(vocab_size: int = 1024, folder: str | os.PathLike | None = None):
    """A small GPT-2-style byte-level BPE tokenizer trained on the embedded corpus.

    Used by random-weight test models (a small vocabulary keeps them fast) and as the
    second, byte-level tokenizer in tests. Deterministic for a given vocab size. Saved to
    ``folder`` (written atomically; ``prepare_model`` saves it with the weights), or to a
    temporary folder that lives as long as the process (TransformerLens re-loads a
    tokenizer from its folder). Nothing is cached outside the workflow's results.
    """
    import atexit
    import shutil
    import tempfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(embedded_documents(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"bpe-{vocab_size}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        fast.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder)
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        fast.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def load_corpus(corpus_path, record_path):
    """The ``corpus`` rule's token-id matrix ``[n_sequences, seq_len]`` and the first
    scored position (1 skips BOS)."""
    import torch

    record = json.loads(Path(record_path).read_text())
    return torch.load(corpus_path, weights_only=True), 1 if record["has_bos"] else 0
