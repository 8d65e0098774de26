"""Drop/swap through the prefix-cached engine == plain transformers with layers edited by hand."""
import copy

import pytest
import torch

from stages_of_inference.engine import Sweep, block_order, layers_for, run_sweep
from stages_of_inference.metrics import entropy_bits, kl_nats, log_probs


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
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False).logits


def full_order(kind, layer, n):
    return list(range(layer)) + block_order(kind, layer, n)


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 500, (3, 17), generator=g)


def test_baseline_matches_hf(tiny_pair, ids):
    hf, bridge, arch = tiny_pair
    sweep = Sweep(bridge)
    with torch.no_grad():
        got = sweep.baseline(ids)
        want = hf(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # replaying every block from the start reproduces the baseline too
    with torch.no_grad():
        replay = sweep.run_from(0, list(range(sweep.n_layers)))
    torch.testing.assert_close(replay, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["drop", "swap"])
def test_interventions_match_hand_edited_hf(tiny_pair, ids, kind):
    hf, bridge, arch = tiny_pair
    sweep = Sweep(bridge)
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


def test_run_sweep_metrics_match_hand_computation(tiny_pair, ids):
    hf, bridge, arch = tiny_pair
    n = bridge.cfg.n_layers
    jobs = [("drop", 1), ("swap", 2)]
    df = run_sweep(bridge, ids, jobs, batch_size=2, first=1, progress=False)
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
