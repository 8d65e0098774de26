"""Edit plans: the orders the papers' code runs, and every plan through the engine == a
plain transformers model whose layer list was edited by hand (parallel groups by hand),
on every tiny architecture, Gemma 3 with its sliding/full blocks included."""
import random

import pytest
import torch

from stages_of_inference.core.engine import Engine
from stages_of_inference.edits.plans import Plan, describe, edit_plans, layer_at, painters, repeats, windows
from stages_of_inference.edits.settings import EditSettings

from hand import deeper_model, edited_model, hand_logits

ARCHS = ("llama", "gpt2", "gpt_neox", "gemma3_text")


def painters_reference(method, n, s, r=3, seed=0):
    """The layer order of gpt/routing_llama.py (Transformer Layers as Painters), as there."""
    end = n - s
    if method == "skip":
        return [i for i in range(n) if i <= s or i >= end]
    if method == "reverse":
        return [end - 1 - (i - s - 1) if s < i < end else i for i in range(n)]
    if method == "middle_repeat":
        return list(range(0, s + 1)) + [int(n / 2)] * len(range(s + 1, end)) + list(range(end, n))
    if method == "random":
        random.seed(seed)
        period = list(range(s + 1, end))
        random.shuffle(period)
        return list(range(0, s + 1)) + period + list(range(end, n))
    if method == "loop_parallel":  # the middle blocks pooled and averaged, r times
        return list(range(0, s + 1)) + [tuple(range(s + 1, end))] * r + list(range(end, n))
    raise AssertionError(method)


@pytest.mark.parametrize("n, s", [(32, 14), (32, 4), (30, 7), (18, 4), (4, 0)])
def test_painters_orders_are_the_papers(n, s):
    rel = s / (n - 1)
    assert layer_at(rel, n) == s
    got = {(p.kind, p.params.get("loops")): p for p in painters(n, [rel], ["skip", "middle_repeat", "reverse",
                                                                             "shuffle", "parallel"], [1, 3], seed=5)}
    names = {"skip": ("skip", None), "middle_repeat": ("middle_repeat", None), "reverse": ("reverse", None),
             "random": ("shuffle", None)}
    for method, key in names.items():
        assert got[key].full_order() == painters_reference(method, n, s, seed=5), method
        assert (got[key].first, got[key].last) == (s + 1, n - s - 1)
    for r in (1, 3):
        assert got[("parallel", r)].full_order() == painters_reference("loop_parallel", n, s, r=r)


def test_painters_leave_out_an_empty_middle():
    assert painters(4, [0.5], ["skip"], [1], 0) == []  # s = 2: middle 3..1
    assert [p.full_order() for p in painters(4, [0.3], ["skip"], [1], 0)] == [[0, 1, 3]]  # s = 1: middle 2


def test_windows_drop_n_blocks_at_every_start():
    plans = windows(6, [1, 3])
    assert len(plans) == 6 + 4
    assert [p.full_order() for p in plans if p.width == 3] == [[3, 4, 5], [0, 4, 5], [0, 1, 5], [0, 1, 2]]
    assert all(p.start == p.first and p.family == "window" for p in plans)


def test_repeats_follow_copy_layers_range():
    """copy_layers_range.py: blocks[:a] + [each block of a..b-1, k + 1 times] + blocks[b:]."""
    def reference(n, a, b, k):
        return list(range(a)) + [i for i in range(a, b) for _ in range(k + 1)] + list(range(b, n))

    plans = repeats(8, [1], [[0.3, 0.6]], [1, 2])
    by_range = {(p.first, p.last, p.params["copies"]): p for p in plans}
    assert (2, 4, 1) in by_range and (2, 4, 2) in by_range  # round(0.3 * 7) = 2, round(0.6 * 7) = 4
    for (a, b, k), plan in by_range.items():
        assert plan.full_order() == reference(8, a, b + 1, k)
    assert len(plans) == 2 * (8 + 1)


def test_describe_and_names():
    assert describe([0, 1, 2, 3, (4, 5, 6), (4, 5, 6), 7]) == "0-3 [4-6] [4-6] 7"
    assert describe([0, 1, 1, 2, 5]) == "0-1 1-2 5"
    assert describe([]) == "-"
    plans = edit_plans(30, EditSettings(), [2, 3])
    names = [p.name for p in plans]
    assert len(names) == len(set(names))
    assert "window n=2 @5" in names and "painters s=7 parallel R=3" in names and "repeat 12-17 k=1" in names


def test_duplicate_plans_run_once():
    s = EditSettings(repeat_widths=[1], repeat_spans=[[0.5, 0.5]], painters_kinds=["skip"])
    plans = edit_plans(5, s, [1])
    assert len(plans) == len(set((p.family, p.kind, p.start, p.order) for p in plans))
    assert sum(p.family == "repeat" for p in plans) == 5  # the span is block 2 alone, already there


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 500, (2, 11), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module", params=ARCHS)
def deep(request, bpe_tokenizer):
    return deeper_model(request.param, bpe_tokenizer), request.param


SETTINGS = EditSettings(window_max=3, painters_starts=[0.0, 0.2], painters_loops=[1, 2], seed=3,
                        repeat_widths=[1], repeat_spans=[[0.2, 0.6]], repeat_copies=[2])


@torch.no_grad()
@pytest.mark.slow  # one of the longest: `make test` runs it
def test_every_plan_equals_a_hand_edited_model(deep, ids):
    hf, arch = deep
    engine = Engine(hf)
    plans = edit_plans(engine.n_layers, SETTINGS, [1, 2, 3])
    assert {p.family for p in plans} == {"window", "painters", "repeat"}
    assert {p.kind for p in plans} >= {"drop", "skip", "middle_repeat", "reverse", "shuffle", "parallel", "repeat"}
    base = engine.baseline(ids)
    for plan in plans:
        got = engine.run_from(plan.start, plan.order)
        want = hand_logits(hf, ids, plan.full_order())
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"{arch}: {plan.name}")
        if plan.kind not in ("middle_repeat", "parallel") or plan.width > 1:
            assert (got - base).abs().max() > 1e-4, plan.name  # the edit changes something


@torch.no_grad()
def test_gemma_blocks_keep_their_attention_type_when_moved(bpe_tokenizer, ids):
    """A reversed middle puts sliding-window blocks where full ones were: letting the
    attention type follow the position (a naive edit) gives other logits."""
    hf = deeper_model("gemma3_text", bpe_tokenizer)
    ids = torch.randint(3, 500, (2, 11), generator=torch.Generator().manual_seed(7))
    engine = Engine(hf)
    engine.baseline(ids)
    plan = next(p for p in painters(6, [0.0], ["reverse"], [1], 0))
    got = engine.run_from(plan.start, plan.order)
    want = hand_logits(hf, ids, plan.full_order())
    naive = edited_model(hf, plan.full_order(), follow_types=False)(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (naive - want).abs().max() > 1e-3


@torch.no_grad()
def test_parallel_by_hand_is_not_sequential(deep, ids):
    """The hand computation of a parallel group averages outputs on one input: it differs
    from running the same blocks one after another (so the equality above can fail)."""
    hf, arch = deep
    seq = hand_logits(hf, ids, [0, 1, 2, 3, 4, 5])
    par = hand_logits(hf, ids, [0, (1, 2, 3, 4), 5])
    assert (seq - par).abs().max() > 1e-3
    one = hand_logits(hf, ids, [0, (1,), 2, 3, 4, 5])  # a group of one block is the block
    torch.testing.assert_close(one, seq, atol=1e-4, rtol=1e-4)
    assert isinstance(Plan("painters", "parallel", 1, ((1, 2),), 1, 2).order[0], tuple)


def test_settings_come_from_the_schema():
    s = EditSettings()
    assert (s.n_sequences, s.seq_len, s.window_max, s.repeat_copies) == (2, 32, 3, [1])
    with pytest.raises(ValueError, match="repeat_spans"):
        EditSettings(repeat_spans=[[0.6, 0.4]])
    with pytest.raises(ValueError, match="painters_kinds"):
        EditSettings(painters_kinds=["loop"])
    with pytest.raises(ValueError, match="window_maxx"):
        EditSettings(window_maxx=2)
