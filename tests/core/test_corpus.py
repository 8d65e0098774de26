"""Corpus sources and seeded sampling."""
import json

import pytest
import torch

from stages_of_inference.core.corpus import CorpusSettings, embedded_documents, iter_documents, sample_sequences


def test_embedded_corpus_is_cpython_docs():
    docs = embedded_documents()
    assert sum(map(len, docs)) > 300_000
    assert any("assignment statement" in d.lower() for d in docs)


def test_sampling_is_seeded_and_recorded(bpe_tokenizer):
    spec = CorpusSettings(n_sequences=5, seq_len=20, seed=7)
    a, rec_a = sample_sequences(spec, bpe_tokenizer)
    b, _ = sample_sequences(spec, bpe_tokenizer)
    c, rec_c = sample_sequences(CorpusSettings(n_sequences=5, seq_len=20, seed=8), bpe_tokenizer)
    assert a.shape == (5, 20) and torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == bpe_tokenizer.bos_token_id).all()
    assert rec_a["corpus"]["seed"] == 7 and rec_a["has_bos"]
    assert rec_a["window_starts"] != rec_c["window_starts"]
    json.dumps(rec_a)
    # each row is a contiguous window of the token stream starting at its recorded offset
    from stages_of_inference.core.corpus import token_stream

    stream = token_stream(embedded_documents(), bpe_tokenizer)
    for row, start in zip(a, rec_a["window_starts"]):
        assert row[1:].tolist() == stream[start : start + 19]


def test_local_txt_and_jsonl(tmp_path, bpe_tokenizer):
    txt = tmp_path / "c.txt"
    txt.write_text("first document about lists.\n\nsecond document about dicts.\n\n")
    assert list(iter_documents(CorpusSettings(source=str(txt)))) == [
        "first document about lists.", "second document about dicts.",
    ]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"body": "alpha beta " * 50}) + "\n" + json.dumps({"body": "gamma"}) + "\n")
    docs = list(iter_documents(CorpusSettings(source=str(jl), text_field="body")))
    assert docs[1] == "gamma"
    settings = CorpusSettings(source=str(jl), text_field="body", n_sequences=2, seq_len=8)
    tokens, _ = sample_sequences(settings, bpe_tokenizer)
    assert tokens.shape == (2, 8)
    with pytest.raises(KeyError, match="corpus.text_field"):
        list(iter_documents(CorpusSettings(source=str(jl))))


def test_too_small_corpus_says_what_to_change(tmp_path, bpe_tokenizer):
    txt = tmp_path / "small.txt"
    txt.write_text("tiny corpus")
    with pytest.raises(ValueError, match="n_sequences"):
        sample_sequences(CorpusSettings(source=str(txt), n_sequences=10, seq_len=64), bpe_tokenizer)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        list(iter_documents(CorpusSettings(source="nope.txt")))
