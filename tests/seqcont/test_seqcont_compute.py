"""Mean ablation, circuit discovery and successor scores on small real models.

* a planted "next digit" head in a small random GPT-2 (learned positions: the head attends
  from each position to the previous one; its OV circuit maps digit k to digit k + 1) is
  found in the circuit and gets the top successor score;
* mean-ablating a component whose output is already constant changes nothing, while
  ablating a live one does;
* the engine's per-component ablation equals a plain transformers forward pass with a
  pre-hook on the output projection (means computed independently);
* the repository's successor score (apartresearch/seqcont_circuits, OV_score_fns.py) equals
  an independent implementation of its formula on plain transformers modules;
* the pruning keeps a removal only when the score is strictly above the threshold, and
  alternates backward and forward sweeps as the repository (a planted logit difference).
"""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from stages_of_inference.core.engine import Engine
from stages_of_inference.seqcont.compute import (
    MLP,
    TaskBatch,
    component_effects,
    corrupted_means,
    find_circuit,
    logit_diff,
    overlap,
    successor_scores,
    task_metrics,
)
from stages_of_inference.seqcont.prompts import FAMILIES, SeqcontSettings, item_token, make_prompts

from conftest import tiny_hf_model

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
        assert summary["final_score_pct"] > 80 and summary["n_sweeps"] >= 2
        # the re-check (a fresh full pass with everything outside ablated) agrees
        assert summary["recheck_score_pct"] == pytest.approx(summary["final_score_pct"], abs=1e-3)
        assert len(rows) == 2 * 5 and rows["step"].tolist() == list(range(10))
    ov = overlap(rows.assign(model="m"))
    assert (PLANT_LAYER, PLANT_HEAD) in set(zip(ov["layer"], ov["head"]))


def test_planted_head_has_top_successor_score(planted, bpe_tokenizer):
    _, engine, _ = planted
    scores = successor_scores(engine, bpe_tokenizer, ["digits", "months"])
    assert set(scores["family"]) == {"digits"}  # months are not single tokens for this BPE
    for score, n_scored in (("lan_torr_barez", 23), ("isolated", 8)):
        s = scores[scores["score"] == score]
        top = s.sort_values("successor_score", ascending=False).iloc[0]
        assert (top["layer"], top["head"]) == (PLANT_LAYER, PLANT_HEAD), score
        assert top.successor_score == 1.0 and top.copy_score == 0.0
        others = s[(s["layer"] != PLANT_LAYER) | (s["head"] != PLANT_HEAD)]
        assert others["successor_score"].max() < 1.0
        # lan_torr_barez: 6 prompts "k k+1 k+2 k+3" (k = 1..6) x 4 items, less 9 (10 is two tokens);
        # isolated: the pairs 1->2 .. 8->9
        assert len(s) == 2 * 4 and (s["n_scored"] == n_scored).all()
    assert scores[scores["score"] == "isolated"]["successor_rank"].min() == 1.0


def test_successor_score_matches_weights(planted, bpe_tokenizer):
    """Our isolated variant, independently for the planted head: embedding -> block 0 ->
    ln_1 -> W_V -> W_O -> ln_f -> W_U by hand from the GPT-2 weights."""
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
    all_scores = successor_scores(engine, bpe_tokenizer, ["digits"])
    scores = all_scores[all_scores["score"] == "isolated"].set_index(["layer", "head"])
    assert scores.loc[(PLANT_LAYER, PLANT_HEAD), "successor_score"] == pytest.approx(want)
    # and a random head, whose score is neither 0 nor 1 by construction
    for head in (0, 1):
        sl = slice(head * dh, (head + 1) * dh)
        with torch.no_grad():
            v = ln @ w[:, 2 * d:][:, sl] + h[PLANT_LAYER].attn.c_attn.bias[2 * d:][sl]
            lg = model.lm_head(model.transformer.ln_f(v @ h[PLANT_LAYER].attn.c_proj.weight[sl]))[:, ids]
        want = float((lg[:-1].argmax(-1) == torch.arange(1, 9)).float().mean())
        assert scores.loc[(PLANT_LAYER, head), "successor_score"] == pytest.approx(want)


def their_prompts(tokenizer, family):
    """The repository's OV prompts, written out as in its notebook: dicts S1..S4 + text
    (``f"{w[i]} {w[i+1]} {w[i+2]} {w[i+3]}"`` for i in range(len(words) - 4)), BOS first;
    item positions by decoding each token (its Dataset looks up "Ġ" + word, a GPT-2 token)."""
    words = FAMILIES[family]
    out = []
    for i in range(len(words) - 4):
        prompt = {f"S{k + 1}": words[i + k] for k in range(4)}
        text = " ".join(prompt[f"S{k + 1}"] for k in range(4))
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([t]).strip() for t in ids]
        positions, at = [], 1
        for k in range(4):
            word = prompt[f"S{k + 1}"]
            while at < len(ids) and pieces[at] != word:
                at += 1
            positions.append(at)
            at += 1
        window = tokenizer(" " + " ".join(words[i:i + 4]), add_special_tokens=False)["input_ids"]
        if at > len(ids) or len(window) != len(ids):
            continue
        out.append((prompt, ids, positions, words))
    return out


def their_next_scores(model, arch, tokenizer, family, k):
    """``get_next_scores`` / ``get_copy_scores`` of every head, independently: the plain
    model's residual after block 0 (a forward hook), each layer's own input norm (what the
    repository's folded blocks[1].attn.ln1 + W_V amount to), + b_V, W_O of the head (on
    Gemma then its post-attention norm), the final norm, the unembedding, the top k decoded
    tokens compared with " " + word and word. Items whose successor is not a single token
    are not scored (as the module)."""
    layers = model.transformer.h if arch == "gpt2" else model.model.layers
    final = model.transformer.ln_f if arch == "gpt2" else model.model.norm
    n_heads = model.config.num_attention_heads if arch != "gpt2" else model.config.n_head
    single = {w: item_token(tokenizer, w) is not None for w in FAMILIES[family]}
    right = {}
    n = 0
    for prompt, ids, positions, words in their_prompts(tokenizer, family):
        store = {}
        handle = layers[0].register_forward_hook(
            lambda m, a, out: store.__setitem__("r0", (out[0] if isinstance(out, tuple) else out).detach()))
        with torch.no_grad():
            model(torch.tensor([ids]))
        handle.remove()
        for key, pos in zip(("S1", "S2", "S3", "S4"), positions):
            word = prompt[key]
            nxt = words[words.index(word) + 1]
            if not single[nxt]:
                continue
            n += 1
            r0 = store["r0"][0, pos]
            for L, block in enumerate(layers):
                with torch.no_grad():
                    if arch == "gpt2":
                        d = r0.shape[-1]
                        dh = d // n_heads
                        x = block.ln_1(r0)
                        w, b = block.attn.c_attn.weight[:, 2 * d:], block.attn.c_attn.bias[2 * d:]
                        vs = [x @ w[:, h * dh:(h + 1) * dh] + b[h * dh:(h + 1) * dh] for h in range(n_heads)]
                        outs = [vs[h] @ block.attn.c_proj.weight[h * dh:(h + 1) * dh] for h in range(n_heads)]
                    else:  # gemma3_text: one key/value head for all query heads, then the post-norm
                        att = block.self_attn
                        dh = att.head_dim
                        x = block.input_layernorm(r0)
                        v = x @ att.v_proj.weight.T  # [n_kv * dh]
                        group = n_heads // (v.shape[-1] // dh)
                        outs = [block.post_attention_layernorm(
                            v[(h // group) * dh:(h // group + 1) * dh] @ att.o_proj.weight[:, h * dh:(h + 1) * dh].T)
                            for h in range(n_heads)]
                    for h, o in enumerate(outs):
                        top = model.lm_head(final(o)).topk(k).indices.tolist()
                        dec = [tokenizer.decode([t]) for t in top]
                        got = right.setdefault((L, h), [0, 0])
                        got[0] += (" " + nxt in dec) or (nxt in dec)
                        got[1] += (" " + word in dec) or (word in dec)
    return {key: (a / n, c / n) for key, (a, c) in right.items()}, n


@pytest.mark.parametrize("arch,k", [("gpt2", 5), ("gpt2", 60), ("gemma3_text", 60)])
def test_lan_torr_barez_score_matches_their_formula(planted, bpe_tokenizer, arch, k):
    """The default successor score against an independent implementation of the
    repository's formula (the planted GPT-2; a random Gemma 3 with sandwich norms and GQA;
    a large k so that random heads score between 0 and 1)."""
    model = planted[0] if arch == "gpt2" else tiny_hf_model("gemma3_text", bpe_tokenizer, seed=2)
    engine = planted[1] if arch == "gpt2" else Engine(copy.deepcopy(model))
    want, n = their_next_scores(model, arch, bpe_tokenizer, "digits", k)
    got = successor_scores(engine, bpe_tokenizer, ["digits"], top_k=k)
    got = got[got["score"] == "lan_torr_barez"].set_index(["layer", "head"])
    assert (got["n_scored"] == n).all() and n == 23
    for key, (nxt, cpy) in want.items():
        assert got.loc[key, "successor_score"] == pytest.approx(nxt), key
        assert got.loc[key, "copy_score"] == pytest.approx(cpy), key
    values = got["successor_score"].to_numpy()
    assert 0 < values.mean() < 1 and len(set(values)) > 2  # the comparison can fail
    iso = successor_scores(engine, bpe_tokenizer, ["digits"], top_k=k)
    iso = iso[iso["score"] == "isolated"].set_index(["layer", "head"])
    assert not np.allclose(iso["successor_score"], got["successor_score"])  # another definition


class PlantedPruning:
    """A stand-in engine of 2 layers x 2 heads whose logit difference is a planted
    function of the set of mean-ablated components, read off the pruning's own hooks
    (they write the means, here 0, over the live value 1)."""

    n_layers, n_heads = 2, 2
    device = "cpu"

    def __init__(self, ld):
        self.ld = ld

    def _logits(self, hooks):
        from stages_of_inference.core.engine import parse_hook_name

        b, t = self.shape
        ablated = [set() for _ in range(b)]
        for name, fn in hooks:
            layer, site = parse_hook_name(name)
            if site == "attn.hook_z":
                z = fn(torch.ones(b, t, self.n_heads, 1))
                for i in range(b):
                    ablated[i] |= {(layer, h) for h in range(self.n_heads) if z[i, -1, h, 0] == 0}
            else:
                x = fn(torch.ones(b, t, 1))
                for i in range(b):
                    if x[i, -1, 0] == 0:
                        ablated[i].add((layer, MLP))
        logits = torch.zeros(b, t, 2)
        logits[:, :, 0] = torch.tensor([float(self.ld(a)) for a in ablated])[:, None]
        return logits

    def baseline(self, ids, hooks=(), positions=slice(None)):
        self.shape = tuple(ids.shape)
        return self._logits(hooks)[:, positions]

    def run_from(self, start, order=None, positions=slice(None), hooks=(), **kw):
        return self._logits(hooks)[:, positions]


def planted_pruning(ld, threshold=0.8, sweeps="repository", seed=0):
    from stages_of_inference.seqcont.compute import mlp_hook, z_hook

    batch = TaskBatch("t", torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long),
                      torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    means = {z_hook(L): torch.zeros(4, 2, 1) for L in range(2)} | {mlp_hook(L): torch.zeros(4, 1) for L in range(2)}
    rows, summary = find_circuit(PlantedPruning(ld), batch, means, threshold, order_seed=seed, sweeps=sweeps)
    return set(rows.loc[rows["in_circuit"], "component"]), rows, summary


def test_pruning_keeps_a_removal_only_strictly_above_the_threshold():
    """Clean logit difference 5; ablating L0H0 leaves 4 = exactly 80 % (4 / 5 == 0.8 in
    floating point): the repository keeps L0H0 (its rule: 100 - 80 < 20 is false); a >=
    rule would remove it. The MLPs are needed (2 / 5), L1H* and L0H1 are not."""
    def ld(ablated):
        return 5 - 1 * ((0, 0) in ablated) - 3 * ((0, MLP) in ablated) - 3 * ((1, MLP) in ablated)

    assert 4 / 5 == 0.8
    circuit, rows, summary = planted_pruning(ld)
    assert circuit == {"MLP0", "MLP1", "L0H0"}
    assert rows.set_index("component").loc["L0H0", "trial_score_pct"] == pytest.approx(80)
    assert summary["final_score_pct"] == pytest.approx(100)
    # a threshold just below: removed, and the circuit scores 80 %
    circuit, _, summary = planted_pruning(ld, threshold=0.79)
    assert circuit == {"MLP0", "MLP1"} and summary["final_score_pct"] == pytest.approx(80)


def test_pruning_sweeps_back_and_forth_as_the_repository():
    """L1H0 is needed only while L0H0 is present. The backward sweep visits L1H0 first
    (kept: 3 / 5), then removes L0H0; the forward sweep that follows removes L1H0; the next
    backward sweep changes nothing and the search stops (3 sweeps). One backward sweep
    alone keeps L1H0."""
    def ld(ablated):
        return (5 - 3 * ((0, MLP) in ablated) - 3 * ((1, MLP) in ablated)
                - 2 * ((1, 0) in ablated and (0, 0) not in ablated))

    circuit, rows, summary = planted_pruning(ld)
    assert circuit == {"MLP0", "MLP1"} and summary["n_sweeps"] == 3
    removed = rows.set_index("component")["removed_in_sweep"]
    assert removed["L1H0"] == 1 and removed["L0H0"] == 0 and removed["L1H1"] == 0 and removed["MLP0"] == -1
    assert rows["step"].tolist() == list(range(6))
    assert rows["component"].tolist() == ["MLP1", "L1H0", "L1H1", "MLP0", "L0H0", "L0H1"]  # the first sweep
    circuit, _, summary = planted_pruning(ld, sweeps="backward_once")
    assert circuit == {"MLP0", "MLP1", "L1H0"} and summary["n_sweeps"] == 1
    for seed in (1, 2):  # seeded orders reach the same circuit here
        assert planted_pruning(ld, seed=seed)[0] == {"MLP0", "MLP1"}


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


@pytest.mark.slow  # one of the longest: `make test` runs it
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


@pytest.mark.slow  # one of the longest: `make test` runs it
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
        COMPONENT_COLUMNS,
        SUCCESSOR_COLUMNS,
        TASK_COLUMNS,
        component_study,
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
    assert set(successor["score"]) == {"lan_torr_barez", "isolated"}
    want = successor_scores(engine, bpe_tokenizer, ["months", "digits"], settings.successor_top_k)
    assert successor.drop(columns="model").reset_index(drop=True).equals(want[successor.columns[1:]])


@pytest.mark.slow  # one of the longest: `make test` runs it
def test_circuit_study_groups_by_length_and_equals_separate_searches(planted):
    """Tasks of one prompt length are searched together, others apart; every task's
    circuit, for every order, is exactly its own search's."""
    from stages_of_inference.seqcont.compute import (
        CIRCUIT_COLUMNS,
        SUMMARY_COLUMNS,
        circuit_study,
        find_circuits,
        model_overlap,
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
