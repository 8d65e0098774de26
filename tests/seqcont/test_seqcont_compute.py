"""Mean ablation, circuit discovery and successor scores on small real models.

* a planted "next digit" head in a small random GPT-2 (learned positions: the head attends
  from each position to the previous one; its OV circuit maps digit k to digit k + 1) is
  found in the circuit and gets the top successor score;
* mean-ablating a component whose output is already constant changes nothing, while
  ablating a live one does;
* the engine's per-component ablation equals a plain transformers forward pass with a
  pre-hook on the output projection (means computed independently).
"""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_hf_model
from stages_of_inference.core.engine import Engine
from stages_of_inference.seqcont.compute import (
    MLP, TaskBatch, component_effects, corrupted_means, find_circuit, logit_diff, overlap,
    successor_scores, task_metrics,
)
from stages_of_inference.seqcont.prompts import SeqcontSettings, item_token, make_prompts

PLANT_LAYER, PLANT_HEAD = 1, 2


def digit_prompts(tokenizer, **kw):
    # "1 2 3 4 " (space-separated: the planted head reads the token just before the last)
    spec = SeqcontSettings(tasks=["digits"], circuit_tasks=[], n_items=4, n_prompts=8, separator=" ", **kw)
    prompts, _ = make_prompts(tokenizer, spec)
    assert len(prompts) == 5
    return prompts


def planted_gpt2(tokenizer, seed=0):
    """A 2-layer GPT-2 (d=64, 4 heads of 16) with default random init, except: positions
    are one-hot in dims 0..15, digit d's embedding is one-hot in dim 16 + d, and head
    (1, 2) attends from position p to p - 1 and writes digit k + 1's direction for digit
    k. The unembedding is tied to the embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=16,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    digits = {d: item_token(tokenizer, str(d)) for d in range(1, 10)}
    with torch.no_grad():
        wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
        wte[:, :32] = 0
        for d, t in digits.items():
            wte[t] = 0
            wte[t, 16 + d] = 1.0
        wpe.zero_()
        for p in range(16):
            wpe[p, p] = 1.0
        attn = model.transformer.h[PLANT_LAYER].attn
        dh, d = 16, 64
        q = slice(PLANT_HEAD * dh, (PLANT_HEAD + 1) * dh)
        w = attn.c_attn.weight  # Conv1D [d, 3d]: q | k | v
        b = attn.c_attn.bias
        for blk in range(3):
            w[:, blk * d:(blk + 1) * d][:, q] = 0
            b[blk * d:(blk + 1) * d][q] = 0
        for p in range(1, 16):
            w[p, PLANT_HEAD * dh + p - 1] = 3.0  # query of p looks for key p - 1
        for p in range(16):
            w[p, d + PLANT_HEAD * dh + p] = 3.0
        for k in range(1, 10):
            w[16 + k, 2 * d + PLANT_HEAD * dh + k] = 1.0  # value: which digit
        o = attn.c_proj.weight  # Conv1D [d (heads' z), d]
        o[q] = 0
        for k in range(1, 9):
            o[PLANT_HEAD * dh + k, 16 + k + 1] = 3.0  # writes digit k + 1
    return model


@pytest.fixture(scope="module")
def planted(bpe_tokenizer):
    model = planted_gpt2(bpe_tokenizer)
    prompts = digit_prompts(bpe_tokenizer)
    return model, Engine(model), TaskBatch.from_prompts(prompts, "digits")


def test_planted_model_solves_digits(planted):
    _, engine, batch = planted
    m = task_metrics(engine, batch)
    assert m["accuracy"] == 1.0 and m["logit_diff"] > 2
    assert m["logit_diff_corrupt"] < m["logit_diff"] / 2


def test_planted_head_found_in_circuit(planted):
    _, engine, batch = planted
    means = corrupted_means(engine, batch.corrupt)
    effects = component_effects(engine, batch, means).set_index(["layer", "head"])
    assert effects.loc[(PLANT_LAYER, PLANT_HEAD), "score_pct"] < 50  # ablating it kills the task
    assert effects["score_pct"].idxmin() == (PLANT_LAYER, PLANT_HEAD)
    for seed in (0, 1):
        rows, summary = find_circuit(engine, batch, means, threshold=0.8, order_seed=seed)
        circuit = set(map(tuple, rows.loc[rows["in_circuit"], ["layer", "head"]].to_numpy()))
        assert (PLANT_LAYER, PLANT_HEAD) in circuit
        assert len(circuit) <= 3  # the other (random, small) components are pruned
        assert summary["final_score_pct"] >= 80
        # the re-check (a fresh full pass with everything outside ablated) agrees
        assert summary["recheck_score_pct"] == pytest.approx(summary["final_score_pct"], abs=1e-3)
        assert len(rows) == 2 * 5 and rows["step"].tolist() == list(range(10))
    ov = overlap(rows.assign(model="m"))
    assert (PLANT_LAYER, PLANT_HEAD) in set(zip(ov["layer"], ov["head"]))


def test_planted_head_has_top_successor_score(planted, bpe_tokenizer):
    _, engine, _ = planted
    scores = successor_scores(engine, bpe_tokenizer, ["digits", "months"])
    assert set(scores["family"]) == {"digits"}  # months are not single tokens for this BPE
    top = scores.sort_values("successor_score", ascending=False).iloc[0]
    assert (top["layer"], top["head"]) == (PLANT_LAYER, PLANT_HEAD)
    assert top.successor_score == 1.0 and top.copy_score == 0.0 and top.successor_rank == 1.0
    others = scores[(scores["layer"] != PLANT_LAYER) | (scores["head"] != PLANT_HEAD)]
    assert others["successor_score"].max() < 1.0
    assert len(scores) == 2 * 4 and (scores["n_items"] == 9).all()


def test_successor_score_matches_weights(planted, bpe_tokenizer):
    """Independent computation for the planted head: embedding -> block 0 -> ln_1 -> W_V
    -> W_O -> ln_f -> W_U by hand from the GPT-2 weights."""
    model, engine, _ = planted
    ids = [item_token(bpe_tokenizer, str(d)) for d in range(1, 10)]
    h = model.transformer.h
    with torch.no_grad():
        x = model.transformer.wte.weight[ids] + model.transformer.wpe.weight[0]
        out = h[0](x[:, None])
        x = (out[0] if isinstance(out, tuple) else out)[:, 0]
        ln = h[PLANT_LAYER].ln_1(x)
        dh, d = 16, 64
        sl = slice(PLANT_HEAD * dh, (PLANT_HEAD + 1) * dh)
        w = h[PLANT_LAYER].attn.c_attn.weight
        v = ln @ w[:, 2 * d:][:, sl] + h[PLANT_LAYER].attn.c_attn.bias[2 * d:][sl]
        out = v @ h[PLANT_LAYER].attn.c_proj.weight[sl]
        logits = model.lm_head(model.transformer.ln_f(out))[:, ids]
    want = float((logits[:-1].argmax(-1) == torch.arange(1, 9)).float().mean())
    scores = successor_scores(engine, bpe_tokenizer, ["digits"]).set_index(["layer", "head"])
    assert scores.loc[(PLANT_LAYER, PLANT_HEAD), "successor_score"] == pytest.approx(want)
    # and a random head, whose score is neither 0 nor 1 by construction
    for head in (0, 1):
        sl = slice(head * dh, (head + 1) * dh)
        with torch.no_grad():
            v = ln @ w[:, 2 * d:][:, sl] + h[PLANT_LAYER].attn.c_attn.bias[2 * d:][sl]
            lg = model.lm_head(model.transformer.ln_f(v @ h[PLANT_LAYER].attn.c_proj.weight[sl]))[:, ids]
        want = float((lg[:-1].argmax(-1) == torch.arange(1, 9)).float().mean())
        assert scores.loc[(PLANT_LAYER, head), "successor_score"] == pytest.approx(want)


@pytest.fixture(scope="module")
def tiny_llama(bpe_tokenizer):
    model = tiny_hf_model("llama", bpe_tokenizer, seed=1)
    batch = TaskBatch.from_prompts(digit_prompts(bpe_tokenizer), "digits")
    return model, batch


def test_constant_component_ablation_changes_nothing(tiny_llama):
    model, batch = tiny_llama
    model = copy.deepcopy(model)
    layer = 2
    attn = model.model.layers[layer].self_attn
    dh = attn.head_dim
    with torch.no_grad():
        attn.v_proj.weight[:dh] = 0  # kv head 0 -> query heads 0 and 1 output z = 0
        model.model.layers[1].mlp.down_proj.weight.zero_()  # MLP 1 outputs 0 everywhere
    engine = Engine(model)
    effects = component_effects(engine, batch).set_index(["layer", "head"])
    clean = effects["logit_diff_clean"].iloc[0]
    for comp in [(layer, 0), (layer, 1), (1, MLP)]:
        assert effects.loc[comp, "logit_diff"] == pytest.approx(clean, abs=1e-5), comp
    live = effects.drop([(layer, 0), (layer, 1), (1, MLP)])
    assert (live["logit_diff"] - clean).abs().max() > 1e-3  # the test can fail


def test_ablation_matches_plain_forward(tiny_llama):
    """component_effects == a plain transformers forward with a pre-hook on o_proj /
    a forward hook on the MLP, means from an independent hooked pass."""
    model, batch = tiny_llama
    engine = Engine(model)
    effects = component_effects(engine, batch).set_index(["layer", "head"])
    layers = model.model.layers
    dh = layers[0].self_attn.head_dim
    for layer, head in [(0, 3), (3, 1), (2, MLP)]:
        store = {}
        if head == MLP:
            mod = layers[layer].mlp
            h1 = mod.register_forward_hook(lambda m, a, out: store.__setitem__("x", out.mean(0)))
            model(batch.corrupt)
            h1.remove()
            h2 = mod.register_forward_hook(lambda m, a, out: store["x"].expand_as(out))
        else:
            mod = layers[layer].self_attn.o_proj
            h1 = mod.register_forward_pre_hook(lambda m, a: store.__setitem__("z", a[0].mean(0)))
            model(batch.corrupt)
            h1.remove()

            def patch(m, a, head=head):
                z = a[0].clone()
                z[..., head * dh:(head + 1) * dh] = store["z"][..., head * dh:(head + 1) * dh]
                return (z,)

            h2 = mod.register_forward_pre_hook(patch)
        with torch.no_grad():
            last = model(batch.clean).logits[:, -1]
        h2.remove()
        want = float(logit_diff(last, batch.answer, batch.incorrect).mean())
        assert effects.loc[(layer, head), "logit_diff"] == pytest.approx(want, abs=1e-4), (layer, head)
    with torch.no_grad():
        last = model(batch.clean).logits[:, -1]
    assert effects["logit_diff_clean"].iloc[0] == pytest.approx(
        float(logit_diff(last, batch.answer, batch.incorrect).mean()), abs=1e-4)


def test_grouped_search_equals_separate_searches(planted):
    """Tasks of one prompt length share forward passes; each gets exactly its own result."""
    from stages_of_inference.seqcont.compute import find_circuits

    _, engine, batch = planted
    halves = []
    for name, rows in (("a", slice(0, 2)), ("b", slice(2, 5))):
        halves.append(TaskBatch(name, batch.clean[rows], batch.corrupt[rows], batch.answer[rows],
                                batch.incorrect[rows]))
    means = [corrupted_means(engine, h.corrupt) for h in halves]
    together = find_circuits(engine, halves, means, threshold=0.8, order_seed=1)
    for h, m, (rows, summary) in zip(halves, means, together):
        alone, alone_summary = find_circuit(engine, h, m, threshold=0.8, order_seed=1)
        assert rows["in_circuit"].tolist() == alone["in_circuit"].tolist()
        np.testing.assert_allclose(rows["trial_score_pct"], alone["trial_score_pct"], atol=1e-3)
        assert summary["recheck_score_pct"] == pytest.approx(alone_summary["recheck_score_pct"], abs=1e-3)


def test_task_helpers():
    from stages_of_inference.seqcont.compute import length_groups, prompt_tasks, task_families

    prompts = pd.DataFrame({"task": ["months", "digits", "digits", "digits_words"]})
    assert prompt_tasks(prompts, ["digits", "numwords", "months", "digits"]) == ["digits", "months"]
    assert task_families(["digits_words", "months", "digits", "weekdays_words"]) == ["digits", "months", "weekdays"]
    ids = lambda t: torch.zeros(2, t, dtype=torch.long)  # noqa: E731
    batches = [TaskBatch(name, ids(t), ids(t), torch.zeros(2), torch.zeros(2))
               for name, t in (("a", 5), ("b", 7), ("c", 5), ("d", 9), ("e", 7))]
    groups = length_groups(batches)
    assert [[b.task for b in g] for g in groups] == [["a", "c"], ["b", "e"], ["d"]]


def test_component_study_is_the_per_task_loop(planted, bpe_tokenizer):
    """Tasks with prompts only, in the settings' order; each task's metrics and component
    effects as computed alone; successor scores for the families of all tasks."""
    from stages_of_inference.seqcont.compute import (
        COMPONENT_COLUMNS, SUCCESSOR_COLUMNS, TASK_COLUMNS, component_study,
    )

    _, engine, _ = planted
    prompts = digit_prompts(bpe_tokenizer)
    settings = SeqcontSettings(tasks=["months", "digits"], circuit_tasks=[])
    tasks, components, successor = component_study(engine, prompts, bpe_tokenizer, settings, "m", progress=False)
    assert list(tasks.columns) == TASK_COLUMNS and tasks["task"].tolist() == ["digits"]
    assert tasks.iloc[0][["model", "family", "variant"]].tolist() == ["m", "digits", "plain"]
    batch = TaskBatch.from_prompts(prompts, "digits")
    metrics = task_metrics(engine, batch)
    for key, value in metrics.items():
        assert tasks.iloc[0][key] == pytest.approx(value, abs=1e-6), key
    assert list(components.columns) == COMPONENT_COLUMNS and set(components["model"]) == {"m"}
    alone = component_effects(engine, batch, corrupted_means(engine, batch.corrupt))
    np.testing.assert_allclose(components["logit_diff"], alone["logit_diff"], atol=1e-6)
    assert components["component"].tolist() == alone["component"].tolist()
    assert list(successor.columns) == SUCCESSOR_COLUMNS and set(successor["model"]) == {"m"}
    want = successor_scores(engine, bpe_tokenizer, ["months", "digits"])
    assert successor.drop(columns="model").reset_index(drop=True).equals(want[successor.columns[1:]])


def test_circuit_study_groups_by_length_and_equals_separate_searches(planted):
    """Tasks of one prompt length are searched together, others apart; every task's
    circuit, for every order, is exactly its own search's."""
    from stages_of_inference.seqcont.compute import (
        CIRCUIT_COLUMNS, SUMMARY_COLUMNS, circuit_study, find_circuits, model_overlap,
    )

    _, engine, batch = planted
    parts = {"digits": (slice(0, 2), 0), "numwords": (slice(2, 5), 0), "months": (slice(0, 5), 1)}
    rows = []
    for task, (sl, cut) in parts.items():  # months: the prompts without their first token
        for i in range(sl.start, sl.stop):
            rows.append(dict(task=task, input_ids=batch.clean[i, cut:].tolist(),
                             corrupt_ids=batch.corrupt[i, cut:].tolist(), answer_id=int(batch.answer[i]),
                             incorrect_id=int(batch.incorrect[i])))
    prompts = pd.DataFrame(rows)
    settings = SeqcontSettings(tasks=[], circuit_tasks=["weekdays", "months", "digits", "numwords"],
                               threshold=0.8, n_orders=2)
    circuits, summary = circuit_study(engine, prompts, settings, "m", progress=False)
    assert list(circuits.columns) == CIRCUIT_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    assert set(circuits["model"]) == {"m"} and set(summary["model"]) == {"m"}
    # length groups in order of first appearance (months alone, then digits + numwords), orders inside
    assert list(zip(summary["task"], summary["order"])) == [
        ("months", 0), ("months", 1), ("digits", 0), ("numwords", 0), ("digits", 1), ("numwords", 1)]
    assert summary["solved"].all()  # every comparison below compares real searches
    for task in parts:
        b = TaskBatch.from_prompts(prompts, task)
        means = corrupted_means(engine, b.corrupt)
        for order in (0, 1):
            alone, alone_summary = find_circuits(engine, [b], [means], 0.8, order_seed=order)[0]
            got = circuits[(circuits["task"] == task) & (circuits["order"] == order)]
            assert got["in_circuit"].tolist() == alone["in_circuit"].tolist()
            np.testing.assert_allclose(got["trial_score_pct"], alone["trial_score_pct"], atol=1e-3)
            s = summary[(summary["task"] == task) & (summary["order"] == order)].iloc[0]
            assert s["recheck_score_pct"] == pytest.approx(alone_summary["recheck_score_pct"], abs=1e-3)
    shared = model_overlap("m", circuits, pd.DataFrame())
    assert shared.equals(overlap(circuits, pd.DataFrame()))
    assert (PLANT_LAYER, PLANT_HEAD) in set(zip(shared["layer"], shared["head"]))
