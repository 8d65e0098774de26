import numpy as np
import pytest
import torch

from stages_of_inference.concepts.compute import (
    corpus_residuals,
    sae_patterns,
    sentence_ids,
    stimulus_patterns,
    window_means,
)
from stages_of_inference.concepts.sae import SAEConfig, SparseAutoencoder
from stages_of_inference.core.engine import Engine

from conftest import tiny_hf_model

SENTENCES = ["The team won the final.", "A storm hit the small boat far from land at night.", "Hi.",
             "She failed the exam again and went home in silence after a long day."]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_stimulus_patterns_match_plain_forward(arch, bpe_tokenizer):
    model = tiny_hf_model(arch, bpe_tokenizer)
    engine = Engine(model)
    layer, window = 2, 6
    ids = sentence_ids(bpe_tokenizer, SENTENCES)
    first = 1 if bpe_tokenizer.bos_token_id is not None else 0
    patterns, lengths = stimulus_patterns(engine, ids, layer, window, first, batch_size=3,
                                          pad_id=bpe_tokenizer.eos_token_id)
    for i, seq in enumerate(ids):
        with torch.no_grad():
            hs = model(torch.tensor([seq]), output_hidden_states=True).hidden_states[layer][0]
        m = min(window, len(seq) - first)
        assert lengths[i] == m
        torch.testing.assert_close(patterns[i, :m], hs[first : first + m], rtol=1e-4, atol=1e-4)
        assert torch.all(patterns[i, m:] == 0)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_corpus_residuals_match_plain_forward(arch, bpe_tokenizer):
    """The engine's run_to (blocks 0..L-1, then stop) over batches of corpus windows: the
    hidden states transformers returns for the residual entering block L, BOS dropped."""
    model = tiny_hf_model(arch, bpe_tokenizer)
    engine = Engine(model)
    ids = torch.randint(0, len(bpe_tokenizer), (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states[3]
    res = corpus_residuals(engine, ids, 3, first=1, batch_size=2)
    torch.testing.assert_close(res, hs[:, 1:].reshape(-1, 64), rtol=1e-4, atol=1e-4)


def test_sae_patterns_zero_on_padding_and_window_means():
    sae = SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, k=2))
    patterns = torch.randn(3, 5, 4)
    lengths = np.array([5, 2, 1])
    patterns[1, 2:] = 0
    patterns[2, 1:] = 0
    feats = sae_patterns(sae, patterns, lengths)
    assert torch.all(feats[1, 2:] == 0) and torch.all(feats[2, 1:] == 0)
    torch.testing.assert_close(feats[0], sae.features(patterns[0]))
    means = window_means(feats, lengths)
    np.testing.assert_allclose(means[1], feats[1, :2].mean(0).numpy(), rtol=1e-6)


def test_stimulus_activations_table(bpe_tokenizer):
    import pandas as pd

    from stages_of_inference.concepts.compute import stimulus_activations
    from stages_of_inference.concepts.settings import ConceptSettings

    engine = Engine(tiny_hf_model("llama", bpe_tokenizer))
    sentences = pd.DataFrame({"sentence_id": range(4), "concept": "c", "label": [1, 1, 0, 0], "pair_id": [0, 1, 0, 1],
                              "text": SENTENCES})
    spec = ConceptSettings.from_config({"concepts": ["c"], "window": 6, "batch_size": 3})
    patterns, lengths, table = stimulus_activations("m", engine, bpe_tokenizer, sentences, spec, layer=2)
    assert list(table.columns) == ["model", "sentence_id", "concept", "label", "pair_id", "text", "n_tokens",
                                   "window_tokens", "layer"]
    assert "model" not in sentences  # the input table is left as it was
    n_tokens = [len(bpe_tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES]
    assert table["n_tokens"].tolist() == n_tokens
    assert table["window_tokens"].tolist() == [min(6, n) for n in n_tokens] == lengths.tolist()
    assert (table["layer"] == 2).all() and (table["model"] == "m").all()
    ids = sentence_ids(bpe_tokenizer, SENTENCES)
    same, _ = stimulus_patterns(engine, ids, 2, 6, 1, batch_size=4, pad_id=bpe_tokenizer.eos_token_id)
    torch.testing.assert_close(patterns, same)


def test_sae_corpus_residuals_from_the_sae_settings(bpe_tokenizer):
    from stages_of_inference.concepts.compute import sae_corpus_residuals
    from stages_of_inference.concepts.settings import SAESettings
    from stages_of_inference.core.corpus import CorpusSettings, sample_sequences

    model = tiny_hf_model("gpt2", bpe_tokenizer)
    engine = Engine(model)
    sae = SAESettings.from_config({"n_sequences": 3, "seq_len": 10, "corpus_seed": 5, "batch_size": 2})
    # the corpus section gives the source; the SAE's own count, length and seed replace the rest
    corpus = {"source": "embedded", "n_sequences": 8, "seq_len": 128, "seed": 0}
    res, record = sae_corpus_residuals(engine, bpe_tokenizer, corpus, sae, layer=1)
    tokens, _ = sample_sequences(CorpusSettings(n_sequences=3, seq_len=10, seed=5), bpe_tokenizer)
    with torch.no_grad():
        hs = model(tokens, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(res, hs[:, 1:].reshape(-1, 64), rtol=1e-4, atol=1e-4)
    assert record == {"layer": 1, "n_sequences": 3, "seq_len": 10, "corpus_seed": 5, "first": 1}
