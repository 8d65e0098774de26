"""Figure 10: -ing prompts, -ing neuron ranking, activations and probes."""
import numpy as np
import pandas as pd
import pytest
import torch

from stages_of_inference.casestudies.ing import (
    ACTIVATION_COLUMNS,
    NEURON_COLUMNS,
    PREDICTION_COLUMNS,
    PROBE_COLUMNS,
    VOCAB_COLUMNS,
    IngSettings,
    build_prompts,
    collect_activations,
    fit_probes,
    ing_mask,
    ing_neuron_table,
    is_ing_string,
    neuron_tables,
    probe_table,
    prompt_activations,
    select_neurons,
)

TEXT = ("we were running home and the dog kept barking at the cat while it was sleeping "
        "on the warm mat near the door, then the wind started blowing over the hill and "
        "nothing was moving in the quiet town except the long grass swaying slowly. ")


def test_is_ing_string():
    assert is_ing_string(" running") and is_ing_string("ing") and is_ing_string("ting")
    assert not is_ing_string(" king's") and not is_ing_string("in") and not is_ing_string(" ing2")
    assert not is_ing_string(" ingot")


@pytest.mark.parametrize("which", ["smol", "bpe"])
def test_token_strings_are_the_tokens_decoded_alone(which, smol_tokenizer, bpe_tokenizer):
    """One backend call gives what decoding each id alone gives (SmolLM2's 49,152 tokens and
    a 512-token byte-level BPE), special tokens included; ``n`` caps at the tokenizer."""
    from stages_of_inference.casestudies.ing import token_strings

    tok = smol_tokenizer if which == "smol" else bpe_tokenizer
    strings = token_strings(tok, len(tok) + 10)
    assert len(strings) == len(tok)
    sample = list(range(0, len(tok), 7)) + list(tok.all_special_ids)
    assert [strings[i] for i in sample] == [tok.decode([i]) for i in sample]


@pytest.mark.parametrize("which", ["smol", "bpe"])
def test_prompts_on_hand_picked_text(which, smol_tokenizer, bpe_tokenizer):
    tok = smol_tokenizer if which == "smol" else bpe_tokenizer
    docs = [TEXT * 4]
    spec = IngSettings(context_tokens=6, n_prompts=50, max_per_word=2, seed=3)
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
    table = ing_neuron_table(w_out, w_u, is_ing, is_real, "m")
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


def _down_proj_forward(hf, prompts, layers):
    """Independent reference: a plain transformers forward with hand-placed pre-hooks on the
    down projections (their input is the MLP activation); last-position activations and
    logits."""
    seen = {}
    hooks = [hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda mod, args, layer=layer: seen.__setitem__(layer, args[0][:, -1].clone())) for layer in layers]
    try:
        with torch.no_grad():
            logits = hf(torch.tensor(prompts)).logits[:, -1]
    finally:
        for h in hooks:
            h.remove()
    return seen, logits


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_activations_match_plain_transformers(attn, arch, bpe_tokenizer):
    """Last-position MLP activations, top-1 and P(ing) from the engine (the job's default
    sdpa attention, and eager) equal a plain transformers forward with a hook on the down
    projection's input. Gemma 3 (tiny): sliding-window layers (window 4 < the 9 tokens),
    GELU-gated MLP between sandwich norms."""
    import copy

    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model(arch, bpe_tokenizer)
    engine = Engine(copy.deepcopy(hf), attn_implementation=attn)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, len(bpe_tokenizer), (5, 9), generator=g).tolist()
    neurons = [(1, 3), (3, 100), (1, 7)]
    is_ing, _ = ing_mask(bpe_tokenizer, len(bpe_tokenizer))
    acts, top1, p_ing = collect_activations(engine, prompts, neurons, is_ing, batch_size=2)
    seen, logits = _down_proj_forward(hf, prompts, (1, 3))
    expected = np.stack([seen[layer][:, n].numpy() for layer, n in neurons], axis=1)
    np.testing.assert_allclose(acts, expected, rtol=1e-4, atol=1e-5)
    assert (top1 == logits.argmax(-1).numpy()).all()
    np.testing.assert_allclose(p_ing, logits.softmax(-1)[:, torch.as_tensor(is_ing)].sum(-1).numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match="same length"):
        collect_activations(engine, [[1, 2, 3], [1, 2]], neurons, is_ing, batch_size=2)


def test_activations_unembed_the_last_position_only(bpe_tokenizer):
    """The model's prediction needs logits at the last position only: the unembedding runs
    on one position per prompt."""
    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    engine = Engine(hf, attn_implementation="eager")
    shapes = []
    handle = hf.lm_head.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.shape)))
    try:
        is_ing, _ = ing_mask(bpe_tokenizer, len(bpe_tokenizer))
        collect_activations(engine, [[1, 5, 7, 9]] * 3, [(0, 1)], is_ing, batch_size=2)
    finally:
        handle.remove()
    assert shapes and all(shape[1] == 1 for shape in shapes), shapes


def _prompt_neurons(n_layers=4):
    return pd.DataFrame({
        "model": "m", "layer": [3, 0, 2, 1], "neuron": [100, 5, 17, 9], "ing_mean": 0.0, "other_mean": 0.0,
        "ing_separation": [2.0, -1.5, 1.0, 0.1], "skew": 0.0, "kurtosis": 0.0, "type": "other",
        "role": ["prediction", "suppression", "prediction", None], "role_rank": [1, 1, 2, 0],
        "order": [1, 2, 3, 0],
    })[NEURON_COLUMNS]


def test_prompt_activations_tables(bpe_tokenizer):
    """The rule's tables: prompts with the model's predictions; a long activation table,
    prompt-major with the selected neurons in ``order``, equal to the reference forward."""
    import copy

    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    engine = Engine(copy.deepcopy(hf))
    settings = IngSettings(context_tokens=6, n_prompts=12, max_per_word=2, min_prompts=2, batch_size=4, seed=3)
    docs = [TEXT * 4]
    prompts, long = prompt_activations(engine, bpe_tokenizer, docs, _prompt_neurons(), settings, "m")
    pd.testing.assert_frame_equal(prompts.drop(columns=PREDICTION_COLUMNS),
                                  build_prompts(docs, bpe_tokenizer, settings, "m"))
    assert list(long.columns) == ACTIVATION_COLUMNS and len(long) == 3 * len(prompts)
    assert long["prompt_id"].tolist() == np.repeat(prompts["prompt_id"], 3).tolist()
    assert long[["layer", "neuron"]].to_numpy()[:3].tolist() == [[3, 100], [0, 5], [2, 17]]
    seen, logits = _down_proj_forward(hf, prompts["input_ids"].tolist(), (0, 2, 3))
    wide = long.pivot(index="prompt_id", columns=["layer", "neuron"], values="activation")
    for layer, neuron in ((3, 100), (0, 5), (2, 17)):
        np.testing.assert_allclose(wide[(layer, neuron)].to_numpy(), seen[layer][:, neuron].numpy(),
                                   rtol=1e-4, atol=1e-5)
    is_ing, _ = ing_mask(bpe_tokenizer, len(bpe_tokenizer))
    top1 = logits.argmax(-1).numpy()
    assert prompts["model_top1_id"].tolist() == top1.tolist()
    assert prompts["model_says_ing"].tolist() == is_ing[top1].tolist()
    assert prompts["model_top1_correct"].tolist() == (top1 == prompts["next_token_id"].to_numpy()).tolist()
    np.testing.assert_allclose(prompts["model_p_ing"], logits.softmax(-1)[:, torch.as_tensor(is_ing)].sum(-1),
                               rtol=1e-4)


class _NoEngine:
    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) although there is nothing to run")


def test_prompt_activations_without_enough_prompts_runs_nothing(bpe_tokenizer):
    settings = IngSettings(context_tokens=6, n_prompts=12, max_per_word=2, min_prompts=1000, seed=3)
    prompts, long = prompt_activations(_NoEngine(), bpe_tokenizer, [TEXT * 4], _prompt_neurons(), settings, "m")
    assert len(prompts) > 0 and long.empty and list(long.columns) == ACTIVATION_COLUMNS
    assert all(prompts[col].isna().all() for col in PREDICTION_COLUMNS)
    # no selected neuron: the same
    none = _prompt_neurons().assign(role=None)
    _, long = prompt_activations(_NoEngine(), bpe_tokenizer, [TEXT * 4], none, IngSettings(context_tokens=6), "m")
    assert long.empty


def _folded_by_hand(hf):
    """Llama (RMSNorm, no sandwich norms): W_U with the final norm's gain folded in, centred
    over the vocabulary; W_out as it is."""
    w_u = hf.lm_head.weight.detach().T * hf.model.norm.weight.detach()[:, None]
    w_u = w_u - w_u.mean(1, keepdim=True)
    w_out = torch.stack([layer.mlp.down_proj.weight.detach().T for layer in hf.model.layers])
    return w_out, w_u


def test_neuron_tables_from_the_engine(bpe_tokenizer):
    """ing separation of every neuron from the engine's folded weights equals a hand
    computation on the transformers weights; the vocabulary table holds the top neurons'
    cosines over the real tokens; the neurons rule's moments give the types."""
    from stages_of_inference.core.engine import Engine
    from stages_of_inference.core.neurons import classify, moments

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    w_out, w_u = _folded_by_hand(hf)
    cos = torch.nn.functional.normalize(w_out, dim=-1) @ torch.nn.functional.normalize(w_u, dim=0)  # [L, n, V]
    skew, kurt = moments(cos)
    neurons = pd.DataFrame({"model": "m", "layer": np.repeat(np.arange(4), 128), "neuron": np.tile(np.arange(128), 4),
                            "skew": skew.flatten().numpy(), "kurtosis": kurt.flatten().numpy()})
    neurons["type"] = classify(neurons["skew"], neurons["kurtosis"])
    settings = IngSettings(n_neurons=3, require_type=False)
    table, vocab = neuron_tables(Engine(hf), bpe_tokenizer, neurons, settings, "m")
    assert list(table.columns) == NEURON_COLUMNS and len(table) == 4 * 128
    assert list(vocab.columns) == VOCAB_COLUMNS
    is_ing, is_real = ing_mask(bpe_tokenizer, w_u.shape[1])
    ing, other = torch.as_tensor(is_ing), torch.as_tensor(is_real & ~is_ing)
    sep = (cos[..., ing].mean(-1) - cos[..., other].mean(-1)) / cos.double().std(-1, unbiased=False)
    np.testing.assert_allclose(table["ing_separation"].to_numpy(), sep.flatten().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["skew"].to_numpy(), neurons["skew"].to_numpy())
    for role, sign in (("prediction", 1), ("suppression", -1)):
        chosen = table[table["role"] == role].sort_values("role_rank")
        assert len(chosen) == 3
        best = int(np.argmax(sign * sep.flatten().numpy()))
        assert (chosen["layer"].iloc[0], chosen["neuron"].iloc[0]) == divmod(best, 128)
        rows = vocab[vocab["role"] == role]
        layer, neuron = divmod(best, 128)
        assert (rows["layer"] == layer).all() and (rows["neuron"] == neuron).all()
        assert rows["token_id"].tolist() == np.flatnonzero(is_real).tolist()
        np.testing.assert_allclose(rows["cosine"].to_numpy(), cos[layer, neuron, is_real].numpy(), atol=1e-5)
        assert rows["is_ing"].tolist() == is_ing[is_real].tolist()


class _NoIngTokenizer:
    """A vocabulary without a single -ing token."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def batch_decode(self, ids):
        return ["x"] * len(ids)


def test_neuron_tables_without_ing_tokens_are_empty(bpe_tokenizer):
    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    table, vocab = neuron_tables(Engine(hf), _NoIngTokenizer(len(bpe_tokenizer)), None, IngSettings(), "m")
    assert table.empty and list(table.columns) == NEURON_COLUMNS
    assert vocab.empty and list(vocab.columns) == VOCAB_COLUMNS


def test_probe_table_handles_missing_data():
    prompts, acts, neurons = _synthetic()
    pd.testing.assert_frame_equal(probe_table(prompts, acts, neurons, 0, "m"),
                                  fit_probes(prompts, acts, neurons, 0, "m"))
    empty = probe_table(prompts, acts.iloc[:0], neurons, 0, "m")
    assert empty.empty and list(empty.columns) == PROBE_COLUMNS
    one_class = prompts.assign(label=1)
    assert probe_table(one_class, acts, neurons, 0, "m").empty


def test_probe_is_an_l2_logistic_regression_on_standardised_inputs():
    """The probe (core.probes.probe_accuracy) is the one fitted before: scikit-learn's L2
    logistic regression (lbfgs, max_iter 2000) after a StandardScaler, fitted here by hand."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    prompts, acts, neurons = _synthetic(seed=4)
    acts = acts.copy()
    acts["activation"] += np.random.default_rng(5).normal(scale=0.8, size=len(acts))  # not separable
    probes = fit_probes(prompts, acts, neurons, seed=0, model="m")
    wide = acts.pivot_table(index="prompt_id", columns=["layer", "neuron"], values="activation")
    y = prompts.set_index("prompt_id").loc[wide.index, "label"].to_numpy()
    train = (prompts.set_index("prompt_id").loc[wide.index, "split"] == "train").to_numpy()
    x = wide[[(3, 7), (1, 2)]].to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0)).fit(x[train], y[train])
    row = probes[(probes["probe"] == "ensemble") & (probes["n_neurons"] == 2)].iloc[0]
    assert row["train_accuracy"] == clf.score(x[train], y[train])
    assert row["test_accuracy"] == clf.score(x[~train], y[~train])
    assert row["test_accuracy"] < 1.0  # a fit with something to get wrong


@pytest.mark.parametrize("vocab_chunk", [16384, 37])
def test_closed_form_separation_matches_full_cosines(vocab_chunk, bpe_tokenizer):
    """The closed-form means/std (d_model x d_model covariance) equal statistics of the
    full neuron x vocabulary cosine matrix, in one block or in blocks of 37 columns (the
    last one shorter); a moments table gives the same types."""
    from stages_of_inference.core.neurons import vocab_cosines

    torch.manual_seed(1)
    d_vocab = len(bpe_tokenizer) + 7  # padded unembedding columns, as in real models
    is_ing, is_real = ing_mask(bpe_tokenizer, d_vocab)
    w_u = torch.randn(24, d_vocab) + 0.3
    w_u[:, ::5] *= 3  # unit columns: their norms must not matter
    w_out = torch.randn(2, 40, 24) ** 3  # heavy-tailed: some neurons get a type
    table = ing_neuron_table(w_out, w_u, is_ing, is_real, "m", vocab_chunk=vocab_chunk)
    cos = vocab_cosines(w_out[1], w_u).double()
    ing, other = torch.as_tensor(is_ing), torch.as_tensor(is_real & ~is_ing)
    sep = (cos[:, ing].mean(1) - cos[:, other].mean(1)) / cos.std(1, unbiased=False)
    np.testing.assert_allclose(table[table.layer == 1]["ing_separation"].to_numpy(), sep.numpy(), rtol=1e-4)
    np.testing.assert_allclose(table[table.layer == 1]["ing_mean"].to_numpy(), cos[:, ing].mean(1).numpy(),
                               atol=1e-6)
    moments = table[["layer", "neuron", "skew", "kurtosis"]].sample(frac=1, random_state=0)
    again = ing_neuron_table(w_out, w_u, is_ing, is_real, "m", moments_table=moments, vocab_chunk=vocab_chunk)
    pd.testing.assert_frame_equal(again, table)
    with pytest.raises(ValueError, match="layer 1"):
        ing_neuron_table(w_out, w_u, is_ing, is_real, "m", moments_table=moments[moments.layer == 0])
