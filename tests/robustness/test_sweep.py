"""Drop/swap through the prefix-cached engine == plain transformers with layers edited by hand."""
import copy

import pytest
import torch

from stages_of_inference.core.engine import ATTN_IMPLEMENTATIONS, block_order, layers_for, plain_model
from stages_of_inference.core.engine import Engine as Sweep
from stages_of_inference.core.metrics import METRIC_COLUMNS, entropy_bits, kl_nats, log_probs
from stages_of_inference.robustness.compute import run_sweep


def decoder_layers(model):
    base = getattr(model, model.base_model_prefix)
    for name in ("layers", "h"):
        if hasattr(base, name):
            return base, name
    raise AssertionError(type(model))


def hand_edited_logits(hf, input_ids, order):
    """An independent computation: rebuild the layer list in `order`, run HF forward."""
    model = copy.deepcopy(hf)
    base, name = decoder_layers(model)
    layers = getattr(base, name)
    setattr(base, name, torch.nn.ModuleList([layers[i] for i in order]))
    model.config.num_hidden_layers = len(order)
    if hasattr(model.config, "n_layer"):
        model.config.n_layer = len(order)
    if getattr(model.config, "layer_types", None):  # each block keeps its own attention type (Gemma)
        model.config.layer_types = [hf.config.layer_types[i] for i in order]
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False).logits


def full_order(kind, layer, n):
    return list(range(layer)) + block_order(kind, layer, n)


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 500, (3, 17), generator=g)


@pytest.mark.parametrize("attn", ATTN_IMPLEMENTATIONS)
def test_baseline_matches_hf(tiny_pair, ids, attn):
    hf, bridge, arch = tiny_pair
    sweep = Sweep(bridge, attn_implementation=attn)
    with torch.no_grad():
        got = sweep.baseline(ids)
        want = hf(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # replaying every block from the start reproduces the baseline too
    with torch.no_grad():
        replay = sweep.run_from(0, list(range(sweep.n_layers)))
    torch.testing.assert_close(replay, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attn", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", ["drop", "swap"])
def test_interventions_match_hand_edited_hf(tiny_pair, ids, kind, attn):
    hf, bridge, arch = tiny_pair
    sweep = Sweep(bridge, attn_implementation=attn)
    n = sweep.n_layers
    with torch.no_grad():
        base = sweep.baseline(ids)
        for layer in layers_for(kind, n):
            got = sweep.intervene(kind, layer)
            want = hand_edited_logits(hf, ids, full_order(kind, layer, n))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4,
                                       msg=f"{arch} {kind} {layer}")
            # and the intervention really changes something
            assert (got - base).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ATTN_IMPLEMENTATIONS)
def test_run_sweep_metrics_match_hand_computation(tiny_pair, ids, attn):
    hf, bridge, arch = tiny_pair
    n = bridge.cfg.n_layers
    jobs = [("drop", 1), ("swap", 2)]
    df = run_sweep(Sweep(bridge, attn_implementation=attn), ids, jobs, batch_size=2, first=1, progress=False)
    assert len(df) == len(jobs) * ids.shape[0] * (ids.shape[1] - 1)
    with torch.no_grad():
        base = hf(input_ids=ids, use_cache=False).logits
    lp_b = log_probs(base)
    for kind, layer in jobs:
        lp_i = log_probs(hand_edited_logits(hf, ids, full_order(kind, layer, n)))
        rows = df[(df.kind == kind) & (df.layer == layer)].sort_values(["seq", "pos"])
        kl = kl_nats(lp_b, lp_i)[:, 1:].reshape(-1)
        torch.testing.assert_close(torch.tensor(rows.kl.values), kl.float(), atol=2e-5, rtol=1e-3)
        dH = (entropy_bits(lp_i) - entropy_bits(lp_b))[:, 1:].reshape(-1)
        torch.testing.assert_close(torch.tensor(rows.entropy_change.values), dH, atol=2e-5, rtol=1e-3)
        agree = (lp_b.argmax(-1) == lp_i.argmax(-1)).float()[:, 1:].reshape(-1)
        assert torch.equal(torch.tensor(rows.top1_agree.values), agree)
        # loss at positions 1..T-2 (those with a next token); NaN at the last position
        loss = -lp_i[:, 1:-1].gather(-1, ids[:, 2:, None]).squeeze(-1).reshape(-1)
        has = rows.pos.values < ids.shape[1] - 1
        torch.testing.assert_close(torch.tensor(rows.loss.values[has]), loss, atol=1e-4, rtol=1e-4)
        assert rows.loss[~has].isna().all()


def test_plain_model_shares_weights_and_leaves_bridge_alone(tiny_pair, ids):
    hf, bridge, arch = tiny_pair
    plain = plain_model(bridge, "sdpa")
    bridge_ptrs = {p.data_ptr() for p in bridge.original_model.parameters()}
    assert all(p.data_ptr() in bridge_ptrs for p in plain.parameters())  # nothing copied
    assert plain.config is not bridge.original_model.config
    assert plain.config._attn_implementation == "sdpa"
    assert not any(type(m).__module__.startswith("transformer_lens") for m in plain.modules())
    Sweep(bridge).baseline(ids)  # hooks on the clone must not stay on the bridge
    assert all(not b._forward_pre_hooks for b in bridge.blocks)
    # the bridge still runs as a bridge: its hook points fire
    seen = []
    bridge.blocks[0].hook_out.add_hook(lambda x, hook: seen.append(1))
    try:
        with torch.no_grad():
            bridge(ids)
    finally:
        bridge.reset_hooks()
    assert seen


def test_run_sweep_on_plain_transformers_model(tiny_pair, ids):
    """A transformers model (no bridge, no TransformerLens import needed) gives the same rows
    as the bridge's unwrapped modules with eager attention."""
    hf, bridge, arch = tiny_pair
    jobs = [("drop", 0), ("swap", 1), ("drop", 3)]
    a = run_sweep(Sweep(bridge, attn_implementation="eager"), ids, jobs, batch_size=3, progress=False)
    b = run_sweep(hf, ids, jobs, batch_size=2, progress=False)
    assert list(b.columns) == ["kind", "layer", "seq", "pos", *METRIC_COLUMNS]
    assert str(b.kind.dtype) == "category" and b.layer.dtype == "int32" and b.kl.dtype == "float32"
    for col in METRIC_COLUMNS:
        torch.testing.assert_close(torch.tensor(b[col].values), torch.tensor(a[col].values),
                                   atol=1e-4, rtol=1e-4, equal_nan=True, msg=col)
    assert (b[["kind", "layer", "seq", "pos"]].astype(str).values
            == a[["kind", "layer", "seq", "pos"]].astype(str).values).all()


def test_out_of_memory_halves_the_batch(tiny_pair, ids, monkeypatch, caplog):
    """On CUDA OOM the batch is retried at half size, and the result is unchanged."""
    import stages_of_inference.robustness.compute as engine

    hf, bridge, arch = tiny_pair
    jobs = [("drop", 1), ("swap", 0)]
    want = run_sweep(hf, ids, jobs, batch_size=3, progress=False)
    real = engine.sweep_batch_tensor
    sizes = []

    def flaky(sweep, input_ids, *args, **kwargs):
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(sweep, input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "sweep_batch_tensor", flaky)
    got = run_sweep(hf, ids, jobs, batch_size=3, progress=False)
    assert sizes == [3, 1, 1, 1]
    torch.testing.assert_close(torch.tensor(got.kl.values), torch.tensor(want.kl.values), atol=1e-5, rtol=1e-4)
    assert "retrying with batch size 1" in caplog.text


def test_blocked_metrics_equal_whole_tensor_metrics():
    from stages_of_inference.core.metrics import Reference, metrics_kernel, metrics_kernel_blocked

    g = torch.Generator().manual_seed(3)
    shape = (3, 7, 1000)
    logits, base = (torch.randn(shape, generator=g) * 4 for _ in range(2))
    targets = torch.randint(0, 1000, shape[:-1], generator=g)
    targets[:, -1] = -1
    has = targets >= 0
    ref = Reference.from_logits(base, targets, has)
    args = (logits, ref.p, ref.neg_entropy_nats, ref.argmax, ref.safe_targets, has)
    want = metrics_kernel(*args)
    for block_bytes in (1, 4 * 1000 * 2, 4 * 1000 * 5, 1 << 30):
        got = metrics_kernel_blocked(*args, block_bytes=block_bytes)
        torch.testing.assert_close(got, want, equal_nan=True, atol=1e-6, rtol=1e-6)
