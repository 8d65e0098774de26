import numpy as np
import pytest
import torch

from conftest import tiny_hf_model
from stages_of_inference.core.engine import Engine
from stages_of_inference.concepts.compute import (
    corpus_residuals, residual_upto, sae_patterns, sentence_ids, stimulus_patterns, window_means)
from stages_of_inference.concepts.sae import SAEConfig, SparseAutoencoder

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


def test_residual_upto_matches_engine_baseline(bpe_tokenizer):
    model = tiny_hf_model("llama", bpe_tokenizer)
    engine = Engine(model)
    ids = torch.randint(0, len(bpe_tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    engine.baseline(ids)
    torch.testing.assert_close(residual_upto(engine, ids, 3), engine.residual_in(3))
    res = corpus_residuals(engine, ids, 3, first=1, batch_size=1)
    torch.testing.assert_close(res, engine.residual_in(3)[:, 1:].reshape(-1, 64))


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
