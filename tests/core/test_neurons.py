"""Prediction/suppression neurons: folding, moments and classes against independent code."""
import copy

import numpy as np
import pytest
import torch

from stages_of_inference.core import neurons
from stages_of_inference.core.engine import Engine
from stages_of_inference.core.models import bridge_from_hf_model

from conftest import tiny_hf_model

ARCHS = ("llama", "gpt2", "gpt_neox")


def parts(hf, arch):
    """(final norm, W_out [L, d_mlp, d_model] as a view of the raw weights, LayerNorm?)."""
    if arch == "gpt2":
        layers = hf.transformer.h
        return hf.transformer.ln_f, [block.mlp.c_proj.weight for block in layers], True
    if arch == "gpt_neox":
        layers = hf.gpt_neox.layers
        return hf.gpt_neox.final_layer_norm, [block.mlp.dense_4h_to_h.weight.T for block in layers], True
    return hf.model.norm, [block.mlp.down_proj.weight.T for block in hf.model.layers], False


def decoder_layers(hf, arch):
    return {"llama": lambda: hf.model.layers, "gpt2": lambda: hf.transformer.h,
            "gpt_neox": lambda: hf.gpt_neox.layers}[arch]()


def manual_fold(hf, arch):
    """HookedTransformer's processing written out: g * W_U (and centre over d_model for
    LayerNorm, whose output has mean zero), then centre W_U over the vocabulary; centre
    writing weights over d_model for LayerNorm models only."""
    norm, w_out, layer_norm = parts(hf, arch)
    w_u = hf.lm_head.weight.detach().T.double() * norm.weight.detach().double()[:, None]
    w_out = torch.stack([w.detach().double() for w in w_out])
    if layer_norm:
        w_u = w_u - w_u.mean(0, keepdim=True)
        w_out = w_out - w_out.mean(-1, keepdim=True)
    return w_out, w_u - w_u.mean(1, keepdim=True)


def with_random_final_norm(hf, arch, seed=0):
    hf = copy.deepcopy(hf)
    g = torch.Generator().manual_seed(seed)
    norm = parts(hf, arch)[0]
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
    return hf


def with_tying(hf, tied):
    if tied != hf.config.tie_word_embeddings:  # SmolLM2 ties; the tiny llama does not
        hf.config.tie_word_embeddings = tied
        hf.lm_head.weight = hf.get_input_embeddings().weight
    return hf


FOLD_CASES = [("llama", False), ("llama", True), ("gpt2", True), ("gpt_neox", False)]


@pytest.mark.parametrize("arch,tied", FOLD_CASES)
def test_folded_weights_match_manual_fold(bpe_tokenizer, arch, tied):
    hf = with_random_final_norm(with_tying(tiny_hf_model(arch, bpe_tokenizer), tied), arch)
    engine = Engine(copy.deepcopy(hf))
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    w_out, w_u = neurons.folded_weights(engine)
    want_out, want_u = manual_fold(hf, arch)
    assert w_out.shape == (hf.config.num_hidden_layers, want_out.shape[1], hf.config.hidden_size)
    assert w_u.shape == (hf.config.hidden_size, len(bpe_tokenizer))
    torch.testing.assert_close(w_out.double(), want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w_u.double(), want_u, atol=1e-5, rtol=1e-5)
    # the final norm really was folded in (not just copied) and W_U is vocab-centred
    raw_u = hf.lm_head.weight.detach().T
    assert (w_u - (raw_u - raw_u.mean(1, keepdim=True))).abs().max() > 1e-2
    assert w_u.mean(1).abs().max() < 1e-5
    # folding leaves the model's next-token distribution unchanged: the final residual,
    # normalised without the gain (the norm's output with bias removed and gain divided
    # out), read by the folded W_U gives the model's log-probabilities
    norm = parts(hf, arch)[0]
    ids = torch.randint(1, 500, (2, 9), generator=torch.Generator().manual_seed(0))
    captured = {}
    handle = decoder_layers(hf, arch)[-1].register_forward_hook(
        lambda m, a, o: captured.update(x=o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            out = hf(input_ids=ids)
    finally:
        handle.remove()
    bias = getattr(norm, "bias", None)
    with torch.no_grad():
        unit = (norm(captured["x"]) - (0 if bias is None else bias)) / norm.weight
        got = (unit @ w_u).log_softmax(-1)
    torch.testing.assert_close(got, out.logits.log_softmax(-1), atol=1e-4, rtol=1e-4)
    # and what a neuron writes, through the folded W_out, is the down projection's output
    # (centred over d_model for LayerNorm models; the biases are not neurons')
    act = torch.randn(5, w_out.shape[1], generator=torch.Generator().manual_seed(1))
    mlp = decoder_layers(hf, arch)[1].mlp
    proj = {"llama": "down_proj", "gpt2": "c_proj", "gpt_neox": "dense_4h_to_h"}[arch]
    proj = getattr(mlp, proj)
    with torch.no_grad():
        write = proj(act) - (0 if proj.bias is None else proj.bias)
    if arch != "llama":
        write = write - write.mean(-1, keepdim=True)
    torch.testing.assert_close(act @ w_out[1], write, atol=1e-4, rtol=1e-4)
    # nothing is folded in place: the engine's model is unchanged, a second call is the same
    for k, v in engine.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    w_out2, w_u2 = neurons.folded_weights(engine)
    assert torch.equal(w_u2, w_u) and torch.equal(w_out2, w_out)
    # a transformers model is accepted as well (wrapped in an engine)
    assert torch.equal(neurons.folded_weights(copy.deepcopy(hf))[1], w_u)


@pytest.mark.parametrize("arch,tied", FOLD_CASES)
def test_folded_weights_equal_transformer_lens_processing(bpe_tokenizer, arch, tied):
    """The engine's folding equals TransformerLens's own weight processing
    (``enable_compatibility_mode()``: HookedTransformer's fold_ln, centre_writing_weights,
    centre_unembed) on the same weights; the bridge is only the reference here."""
    hf = with_random_final_norm(with_tying(tiny_hf_model(arch, bpe_tokenizer), tied), arch)
    bridge = bridge_from_hf_model(copy.deepcopy(hf), bpe_tokenizer)
    bridge.enable_compatibility_mode(disable_warnings=True)
    w_out, w_u = neurons.folded_weights(Engine(copy.deepcopy(hf)))
    torch.testing.assert_close(w_out, bridge.W_out.detach().float().cpu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w_u, bridge.W_U.detach().float().cpu(), atol=1e-5, rtol=1e-5)


def test_moments_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 1000, generator=g) ** 3  # skewed, heavy-tailed
    skew, kurt = neurons.moments(x)
    np.testing.assert_allclose(skew.numpy(), stats.skew(x.numpy(), axis=1, bias=True), rtol=1e-6)
    np.testing.assert_allclose(kurt.numpy(), stats.kurtosis(x.numpy(), axis=1, fisher=False, bias=True), rtol=1e-6)
    # raw kurtosis: a Gaussian gives 3, not 0
    _, k = neurons.moments(torch.randn(200_000, generator=g))
    assert abs(float(k) - 3.0) < 0.1


def test_layer_moments_blocked_rows_match_scipy():
    """Moments taken a few neurons at a time (the CPU default) equal scipy on the cosines."""
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    w_out = torch.randn(37, 16, generator=g)
    w_u = neurons._unit(torch.randn(16, 500, generator=g) ** 3, 0)
    cos = (neurons._unit(w_out, 1) @ w_u).double().numpy()
    for chunk, rows in ((10, 3), (37, 37), (8, None)):
        skew, kurt = neurons.layer_moments(w_out, w_u, chunk=chunk, rows=rows)
        assert skew.shape == kurt.shape == (37,)
        np.testing.assert_allclose(skew, stats.skew(cos, axis=1, bias=True), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(kurt, stats.kurtosis(cos, axis=1, fisher=False, bias=True), rtol=1e-5)


def test_classify_thresholds():
    got = neurons.classify([1.0, -1.0, 1.0, -1.0, 0.0], [11.0, 11.0, 9.0, 10.0, 50.0])
    assert list(got) == ["prediction", "suppression", "other", "other", "other"]


WIDE = {  # d_model 128: a planted outlier among 512 cosines is then far above kurtosis 10
    "llama": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64),
    "gpt2": dict(n_embd=128, n_layer=3, n_head=4, n_positions=64),
    "gpt_neox": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                     max_position_embeddings=64),
}


def wide_model(arch, tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **WIDE[arch])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_prediction_and_suppression_neurons(bpe_tokenizer, arch):
    stats = pytest.importorskip("scipy.stats")
    hf = with_random_final_norm(wide_model(arch, bpe_tokenizer), arch)
    norm, w_out, _ = parts(hf, arch)
    token = 300
    # the token's unembedding with the final norm folded in, as an output weight vector
    direction = hf.lm_head.weight.detach()[token] * norm.weight.detach()
    planted = {(1, 5): 4.0, (2, 7): -4.0}  # (layer, neuron) -> multiple
    with torch.no_grad():
        for (layer, neuron), c in planted.items():
            w_out[layer][neuron] = c * direction
    table = neurons.neuron_classes(Engine(copy.deepcopy(hf)), "tiny")
    assert list(table.columns) == list(neurons.COLUMNS)
    assert len(table) == hf.config.num_hidden_layers * w_out[0].shape[0]
    row = table.set_index(["layer", "neuron"])
    assert row.loc[(1, 5), "type"] == "prediction"
    assert row.loc[(2, 7), "type"] == "suppression"
    assert row.loc[(1, 5), "skew"] > 0 > row.loc[(2, 7), "skew"]
    # random neurons have near-Gaussian cosines: none is classified
    others = table.drop(table.index[[row.index.get_loc((1, 5)), row.index.get_loc((2, 7))]])
    assert (others["type"] == "other").all()
    # moments of the planted neuron against scipy on a manually folded model
    m_out, m_u = manual_fold(hf, arch)
    w = m_out[1, 5]
    cos = ((w / w.norm()) @ (m_u / m_u.norm(dim=0, keepdim=True))).numpy()
    assert cos[token] > 0.99
    np.testing.assert_allclose(row.loc[(1, 5), "skew"], stats.skew(cos, bias=True), rtol=1e-4)
    np.testing.assert_allclose(row.loc[(1, 5), "kurtosis"], stats.kurtosis(cos, fisher=False, bias=True), rtol=1e-4)
    # and the counts per layer
    counts = neurons.type_counts(table).set_index("layer")
    assert counts.loc[1, "prediction"] == 1 and counts.loc[2, "suppression"] == 1
    assert counts["prediction"].sum() == 1 and counts["suppression"].sum() == 1
    assert counts.loc[2, "rel_depth"] == 1.0
