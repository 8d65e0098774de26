"""The engine's passes (run_with_cache, run_to, forward at positions, parallel blocks) and
the sites added for the studies (residual before/after a block, attention patterns),
against plain ``transformers`` forward passes (output_hidden_states, output_attentions,
hand-edited layer lists). Every architecture of the tiny set, Gemma 3 included."""
import copy

import pytest
import torch

from stages_of_inference.core.engine import Engine, batched, block_order, hook_name

from conftest import tiny_hf_model

ARCHS = ("llama", "gpt2", "gpt_neox", "gemma3_text")


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(5)
    return torch.randint(3, 500, (3, 13), generator=g)


@pytest.fixture(scope="module", params=ARCHS)
def model(request, bpe_tokenizer):
    return tiny_hf_model(request.param, bpe_tokenizer), request.param


def layer_list(hf):
    base = hf.base_model
    return ("h", base) if hasattr(base, "h") else ("layers", base)


def edited_model(hf, order):
    """A deep copy of ``hf`` whose decoder runs ``order`` (block indices; repeats allowed),
    each block keeping its own attention type (Gemma's config.layer_types follow the blocks)."""
    edited = copy.deepcopy(hf)
    name, holder = layer_list(edited)
    old = getattr(holder, name)
    setattr(holder, name, torch.nn.ModuleList([old[i] for i in order]))
    edited.config.num_hidden_layers = len(order)
    if getattr(edited.config, "layer_types", None):
        edited.config.layer_types = [hf.config.layer_types[i] for i in order]
    return edited


def test_run_with_cache_matches_hidden_states(model, ids):
    hf, arch = model
    engine = Engine(hf)
    n = engine.n_layers
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True, use_cache=False)
        names = [hook_name(L, "hook_resid_pre") for L in range(n)] + [hook_name(n - 2, "hook_resid_post")]
        logits, cache = engine.run_with_cache(ids, names, positions=slice(2, None))
    torch.testing.assert_close(logits, out.logits[:, 2:], atol=1e-5, rtol=1e-5)
    for L in range(n):  # hidden_states[L] is the input of block L (the last entry is normed: not used)
        torch.testing.assert_close(cache[hook_name(L, "hook_resid_pre")], out.hidden_states[L], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache[hook_name(n - 2, "hook_resid_post")], out.hidden_states[n - 1],
                               atol=1e-5, rtol=1e-5)


def test_run_to_stops_early_and_runs_nothing_after(model, ids):
    hf, arch = model
    engine = Engine(hf)
    finished = []  # blocks of the engine's own module tree that ran to the end
    handles = [b.register_forward_hook(lambda m, a, o, i=i: finished.append(i)) for i, b in enumerate(engine.blocks)]
    try:
        with torch.no_grad():
            got = engine.run_to(ids, 2)
    finally:
        for h in handles:
            h.remove()
    assert finished == [0, 1]
    with torch.no_grad():
        full = hf(input_ids=ids, output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(got, full.hidden_states[2], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        last = engine.run_to(ids, engine.n_layers)
        # the final residual (before the final norm) unembeds to the model's logits
        torch.testing.assert_close(engine.unembed(last), full.logits, atol=1e-4, rtol=1e-4)
        _, cache = engine.run_with_cache(ids, [hook_name(engine.n_layers - 1, "hook_resid_post")], logits=False)
    torch.testing.assert_close(cache[hook_name(engine.n_layers - 1, "hook_resid_post")], last)


def test_resid_pre_hook_edits_the_stream(model, ids):
    """Adding a vector at blocks.2.hook_resid_pre == adding it at block 2's input by hand."""
    hf, arch = model
    engine = Engine(hf)
    delta = torch.randn(engine.d_model, generator=torch.Generator().manual_seed(0))
    name, holder = layer_list(hf)
    handle = getattr(holder, name)[2].register_forward_pre_hook(
        lambda m, args, kwargs: ((args[0] + delta, *args[1:]), kwargs) if args
        else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + delta}), with_kwargs=True)
    try:
        with torch.no_grad():
            want = hf(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()
    with torch.no_grad():
        got = engine.forward(ids, hooks=[(hook_name(2, "hook_resid_pre"), lambda x: x + delta)])
        clean = engine.forward(ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got - clean).abs().max() > 1e-2


def test_attention_pattern_needs_and_matches_eager(model, ids):
    hf, arch = model
    with torch.no_grad():
        want = hf(input_ids=ids, output_attentions=True, use_cache=False).attentions
    engine = Engine(hf, attn_implementation="eager")
    patterns = {}

    def keep(L):
        def fn(p):
            patterns[L] = p.detach().clone()
        return fn

    with torch.no_grad():
        engine.forward(ids, hooks=[(hook_name(L, "attn.hook_pattern"), keep(L)) for L in range(engine.n_layers)])
    for L in range(engine.n_layers):
        torch.testing.assert_close(patterns[L], want[L], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(patterns[L].sum(-1), torch.ones_like(patterns[L][..., 0]))
    if arch == "gemma3_text":  # the sliding-window layers (window 4) see only 4 keys; full layers all
        assert (patterns[0][..., -1, :-4] == 0).all() and (patterns[1][..., -1, :-4] > 0).any()
    with pytest.raises(ValueError, match="eager"):
        Engine(hf, attn_implementation="sdpa").forward(ids, hooks=[(hook_name(0, "attn.hook_pattern"), keep(0))])


@pytest.mark.parametrize("kind", ["drop", "swap"])
@pytest.mark.slow  # one of the longest: `make test` runs it
def test_every_edit_keeps_each_blocks_own_attention_type(model, ids, kind):
    """drop and swap at every layer == a hand-edited layer list whose blocks keep their own
    types. On Gemma a swap of a sliding and a full block (L = 0, 1, 2) is where a naive edit,
    letting types follow positions, goes wrong: the test shows the naive edit differs."""
    hf, arch = model
    engine = Engine(hf)
    n = engine.n_layers
    with torch.no_grad():
        engine.baseline(ids)
        for layer in range(n if kind == "drop" else n - 1):
            order = list(range(layer)) + block_order(kind, layer, n)
            want = edited_model(hf, order)(input_ids=ids, use_cache=False).logits
            torch.testing.assert_close(engine.intervene(kind, layer), want, atol=1e-4, rtol=1e-4)
            if arch == "gemma3_text" and kind == "swap":
                naive = copy.deepcopy(hf)
                naive.model.layers = torch.nn.ModuleList([naive.model.layers[i] for i in order])
                assert (naive(input_ids=ids, use_cache=False).logits - want).abs().max() > 1e-3


def test_parallel_blocks_average_their_writes(model, ids):
    """order=[1, (2, 3)]: blocks 2 and 3 both read the residual after block 1; the new
    residual is x + mean of their writes (= the mean of their outputs)."""
    hf, arch = model
    engine = Engine(hf)
    with torch.no_grad():
        engine.baseline(ids)
        got = engine.run_from(1, order=[1, (2, 3)], output="residual")
        x = engine.run_from(1, order=[1], output="residual")
        out2 = engine.run_from(2, order=[2], output="residual", hidden=x)
        out3 = engine.run_from(3, order=[3], output="residual", hidden=x)
    torch.testing.assert_close(got, x + ((out2 - x) + (out3 - x)) / 2, atol=1e-5, rtol=1e-5)


def test_batched_halves_on_out_of_memory_and_keeps_order():
    calls = []

    def fn(a, b):
        calls.append((a, b))
        if b - a > 2:
            raise torch.OutOfMemoryError("simulated")
        return list(range(a, b))

    out = batched(7, 8, fn)
    assert [x for part in out for x in part] == list(range(7))
    assert calls[:3] == [(0, 7), (0, 4), (0, 2)] and batched.last_batch_size == 2
    with pytest.raises(torch.OutOfMemoryError):
        batched(3, 1, lambda a, b: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
