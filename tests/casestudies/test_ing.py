"""Figure 10: -ing prompts, -ing neuron ranking, activations and probes."""
import numpy as np
import pandas as pd
import pytest
import torch

from stages_of_inference.casestudies.ing import (IngSpec, build_prompts, collect_activations, fit_probes, ing_mask,
                                        is_ing_string, neuron_table, select_neurons)

TEXT = ("we were running home and the dog kept barking at the cat while it was sleeping "
        "on the warm mat near the door, then the wind started blowing over the hill and "
        "nothing was moving in the quiet town except the long grass swaying slowly. ")


def test_is_ing_string():
    assert is_ing_string(" running") and is_ing_string("ing") and is_ing_string("ting")
    assert not is_ing_string(" king's") and not is_ing_string("in") and not is_ing_string(" ing2")
    assert not is_ing_string(" ingot")


@pytest.mark.parametrize("which", ["smol", "bpe"])
def test_prompts_on_hand_picked_text(which, smol_tokenizer, bpe_tokenizer):
    tok = smol_tokenizer if which == "smol" else bpe_tokenizer
    docs = [TEXT * 4]
    spec = IngSpec(context_tokens=6, n_prompts=50, max_per_word=2, seed=3)
    prompts = build_prompts(docs, tok, spec, "m")
    ids = tok(docs[0], add_special_tokens=False)["input_ids"]
    pos = prompts[prompts["label"] == 1]
    neg = prompts[prompts["label"] == 0]
    ing_words = {"running", "barking", "sleeping", "blowing", "nothing", "moving", "swaying"}
    assert len(pos) > 0 and set(pos["word"]) <= ing_words
    assert not set(neg["word"]) & ing_words
    # matched on "the next token continues a word": as many negatives as positives in each
    # group when the corpus has enough (always for word-initial tokens; this short text may
    # lack multi-token non-ing words)
    for continues in (False, True):
        n_pos = (pos["continues_word"] == continues).sum()
        n_neg = (neg["continues_word"] == continues).sum()
        assert n_neg <= n_pos
        if not continues:
            assert n_neg == n_pos
    assert len(neg) > 0 and (pos["continues_word"] == (pos["n_subtokens"] > 1)).all()
    assert prompts["word"].value_counts().max() <= 2
    for _, p in prompts.iterrows():
        prompt = list(p["input_ids"])
        assert len(prompt) == 1 + 6 and prompt[0] == tok.bos_token_id
        body = prompt[1:]
        # the prompt is a window of the document's own tokens, followed by next_token_id
        starts = [i for i in range(len(ids) - 6) if ids[i : i + 6] == body and ids[i + 6] == p["next_token_id"]]
        assert starts, p["word"]
        nxt = tok.decode([p["next_token_id"]])
        assert is_ing_string(nxt) == bool(p["label"])
        assert p["word"].endswith(nxt.strip())
    assert set(prompts["split"]) == {"train", "test"}
    again = build_prompts(docs, tok, spec, "m")
    assert again["input_ids"].tolist() == prompts["input_ids"].tolist()
    assert again["split"].tolist() == prompts["split"].tolist()


def _synthetic(n=400, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    prompts = pd.DataFrame({
        "prompt_id": np.arange(n), "label": label,
        "split": np.where(rng.random(n) < 0.3, "test", "train"),
        "model_says_ing": np.where(rng.random(n) < 0.8, label, 1 - label).astype(bool),
        "model_top1_correct": rng.random(n) < 0.5,
    })
    planted = label.astype(float)               # activation == label
    random = rng.normal(size=n)                 # independent of the label
    acts = pd.DataFrame({
        "prompt_id": np.tile(np.arange(n), 2),
        "layer": np.repeat([3, 1], n), "neuron": np.repeat([7, 2], n),
        "activation": np.concatenate([planted, random]),
    })
    neurons = pd.DataFrame({
        "layer": [3, 1, 0], "neuron": [7, 2, 5], "role": ["prediction", "suppression", None],
        "type": ["prediction", "suppression", "other"], "ing_separation": [3.0, -1.0, 0.1],
        "order": [1, 2, 0],
    })
    return prompts, acts, neurons


def test_planted_neuron_probe_is_perfect_random_neuron_is_chance():
    prompts, acts, neurons = _synthetic()
    probes = fit_probes(prompts, acts, neurons, seed=0, model="m")
    single = probes[probes["probe"] == "single"].set_index(["layer", "neuron"])
    assert single.loc[(3, 7), "test_accuracy"] >= 0.99
    assert abs(single.loc[(1, 2), "test_accuracy"] - 0.5) < 0.12
    ens = probes[probes["probe"] == "ensemble"].set_index("n_neurons")["test_accuracy"]
    assert list(ens.index) == [1, 2] and ens.loc[2] >= 0.97
    # the model's own accuracy is computed from its predictions on the same held-out prompts
    test = prompts["split"] == "test"
    own = (prompts.loc[test, "model_says_ing"].astype(int) == prompts.loc[test, "label"]).mean()
    assert probes.loc[probes["probe"] == "model_top1", "test_accuracy"].iloc[0] == pytest.approx(own)
    # swapping the activations of the two neurons moves the accuracy with them
    acts2 = acts.copy()
    acts2["activation"] = np.concatenate([acts["activation"].to_numpy()[len(prompts):],
                                          acts["activation"].to_numpy()[: len(prompts)]])
    single2 = fit_probes(prompts, acts2, neurons).query("probe == 'single'").set_index(["layer", "neuron"])
    assert single2.loc[(1, 2), "test_accuracy"] >= 0.99 and single2.loc[(3, 7), "test_accuracy"] < 0.65


def test_planted_ing_neurons_rank_first(bpe_tokenizer):
    """A neuron whose output weights point at the -ing tokens' unembeddings must be the top
    prediction neuron for -ing; its negation the top suppression neuron."""
    torch.manual_seed(0)
    d_vocab, d_model, d_mlp, n_layers = len(bpe_tokenizer), 32, 16, 3
    is_ing, is_real = ing_mask(bpe_tokenizer, d_vocab)
    assert 0 < is_ing.sum() < d_vocab / 4
    w_u = torch.randn(d_model, d_vocab)
    w_u = w_u - w_u.mean(1, keepdim=True)
    w_out = torch.randn(n_layers, d_mlp, d_model)
    direction = w_u[:, torch.as_tensor(is_ing)].mean(1)
    w_out[2, 5] = 4 * direction
    w_out[1, 9] = -direction
    table = neuron_table(w_out, w_u, is_ing, is_real, "m")
    # independent: standardised mean difference of cosines computed by hand
    cos = torch.nn.functional.normalize(w_out[2, 5], dim=0) @ torch.nn.functional.normalize(w_u, dim=0)
    ing, other = cos[torch.as_tensor(is_ing)], cos[torch.as_tensor(~is_ing & is_real)]
    by_hand = float((ing.mean() - other.mean()) / cos.std(unbiased=False))
    row = table.set_index(["layer", "neuron"]).loc[(2, 5)]
    assert row["ing_separation"] == pytest.approx(by_hand, rel=1e-4)
    chosen = select_neurons(table, n=3, require_type=False, model="m").set_index(["layer", "neuron"])
    assert chosen.loc[(2, 5), "role"] == "prediction" and chosen.loc[(2, 5), "role_rank"] == 1
    assert chosen.loc[(1, 9), "role"] == "suppression" and chosen.loc[(1, 9), "role_rank"] == 1
    assert sorted(chosen.loc[chosen["role"].notna(), "order"]) == list(range(1, 7))


def test_activations_match_plain_transformers(bpe_tokenizer):
    """Last-position MLP activations and top-1 from the bridge equal a plain transformers
    forward with a hook on the down projection's input."""
    import copy

    from conftest import tiny_hf_model

    from stages_of_inference.core.models import bridge_from_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    bridge = bridge_from_hf_model(copy.deepcopy(hf), bpe_tokenizer, name="tiny-llama")
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, len(bpe_tokenizer), (5, 9), generator=g).tolist()
    neurons = [(1, 3), (3, 100), (1, 7)]
    is_ing, _ = ing_mask(bpe_tokenizer, len(bpe_tokenizer))
    acts, top1, p_ing = collect_activations(bridge, prompts, neurons, is_ing, batch_size=2)
    seen = {}
    hooks = [hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda mod, args, layer=layer: seen.__setitem__(layer, args[0][:, -1].clone())) for layer in (1, 3)]
    try:
        with torch.no_grad():
            logits = hf(torch.tensor(prompts)).logits[:, -1]
    finally:
        for h in hooks:
            h.remove()
    expected = np.stack([seen[layer][:, n].numpy() for layer, n in neurons], axis=1)
    np.testing.assert_allclose(acts, expected, rtol=1e-4, atol=1e-5)
    assert (top1 == logits.argmax(-1).numpy()).all()
    np.testing.assert_allclose(p_ing, logits.softmax(-1)[:, torch.as_tensor(is_ing)].sum(-1).numpy(), rtol=1e-4)


def test_closed_form_separation_matches_full_cosines(bpe_tokenizer):
    """The closed-form means/std (d_model x d_model covariance) equal statistics of the
    full neuron x vocabulary cosine matrix; a moments table gives the same types."""
    from stages_of_inference.core.neurons import vocab_cosines

    torch.manual_seed(1)
    d_vocab = len(bpe_tokenizer) + 7  # padded unembedding columns, as in real models
    is_ing, is_real = ing_mask(bpe_tokenizer, d_vocab)
    w_u = torch.randn(24, d_vocab) + 0.3
    w_out = torch.randn(2, 40, 24) ** 3  # heavy-tailed: some neurons get a type
    table = neuron_table(w_out, w_u, is_ing, is_real, "m")
    cos = vocab_cosines(w_out[1], w_u).double()
    ing, other = torch.as_tensor(is_ing), torch.as_tensor(is_real & ~is_ing)
    sep = (cos[:, ing].mean(1) - cos[:, other].mean(1)) / cos.std(1, unbiased=False)
    np.testing.assert_allclose(table[table.layer == 1]["ing_separation"].to_numpy(), sep.numpy(), rtol=1e-4)
    np.testing.assert_allclose(table[table.layer == 1]["ing_mean"].to_numpy(), cos[:, ing].mean(1).numpy(),
                               atol=1e-6)
    moments = table[["layer", "neuron", "skew", "kurtosis"]].sample(frac=1, random_state=0)
    again = neuron_table(w_out, w_u, is_ing, is_real, "m", moments_table=moments)
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(ValueError, match="layer 1"):
        neuron_table(w_out, w_u, is_ing, is_real, "m", moments_table=moments[moments.layer == 0])
