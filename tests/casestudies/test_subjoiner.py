"""Figure 9: word splitting, prompt selection and the sub-joiner head score."""

import numpy as np
import pytest

from stages_of_inference.casestudies.subjoiner import (
    SubjoinerSettings,
    analyse,
    build_prompts,
    head_scores,
    last_query_attention,
)
from stages_of_inference.casestudies.words import document_words, encode_with_offsets, scan_corpus

TEXT = ("The dogs were jumping over the unbelievably lazy dog, then running home. "
        "Call x.append or foo_bar; don't use 2nd Running words.\n"
        "they keep talking  twice")


@pytest.fixture(scope="session")
def metaspace_tokenizer():
    """A SentencePiece-style tokenizer ("▁word"), trained in a second on a few documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from stages_of_inference.core.corpus import embedded_documents

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(embedded_documents()[:40], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")


def words_of(tokenizer, text=TEXT):
    ids, offsets = encode_with_offsets(tokenizer, text)
    return ids, {w.word: w for w in document_words(0, text, offsets)}


def spelled(tokenizer, ids, w):
    return tokenizer.decode(ids[w.first : w.last + 1].tolist())


def test_standalone_lowercase_words_only(smol_tokenizer, bpe_tokenizer, metaspace_tokenizer):
    for tok in (smol_tokenizer, bpe_tokenizer, metaspace_tokenizer):
        _, words = words_of(tok)
        # capitalised, attribute, identifier, contraction, digit-prefixed, at a line start,
        # after two spaces: all excluded
        for absent in ("The", "Call", "append", "foo", "bar", "don", "nd", "Running", "x", "they", "twice"):
            assert absent not in words, (type(tok).__name__, absent)
        for present in ("dogs", "were", "jumping", "unbelievably", "lazy", "dog", "home", "use", "keep", "talking"):
            assert present in words, (present, sorted(words))


def test_smollm2_splits(smol_tokenizer):
    ids, words = words_of(smol_tokenizer)
    assert words["jumping"].n_subtokens == 1  # "Ġjumping"
    assert words["lazy"].n_subtokens == 1
    assert words["unbelievably"].n_subtokens == 3  # "Ġunbelie" "v" "ably"
    for w in words.values():  # the space belongs to the first token
        assert spelled(smol_tokenizer, ids, w) == " " + w.word


def test_bytelevel_small_vocab_splits(bpe_tokenizer):
    ids, words = words_of(bpe_tokenizer)
    tokens = bpe_tokenizer.convert_ids_to_tokens(ids.tolist())
    w = words["jumping"]  # "Ġ" "j" "u" "mp" "ing": the bare "Ġ" is not a sub-token of the word
    assert tokens[w.first - 1] == "Ġ"
    assert [tokens[i] for i in range(w.first, w.last + 1)] == ["j", "u", "mp", "ing"]
    assert words["dog"].n_subtokens == 3 and tokens[words["dog"].first] == "Ġd"
    for w in words.values():
        assert spelled(bpe_tokenizer, ids, w).strip() == w.word


def test_sentencepiece_marker(metaspace_tokenizer):
    ids, words = words_of(metaspace_tokenizer)
    tokens = metaspace_tokenizer.convert_ids_to_tokens(ids.tolist())
    assert any(t.startswith("▁") for t in tokens)
    for w in words.values():
        pieces = "".join(tokens[w.first : w.last + 1])
        assert pieces.lstrip("▁") == w.word, (w.word, tokens[w.first : w.last + 1])
    assert max(w.n_subtokens for w in words.values()) >= 2


def test_every_corpus_word_is_spelled_by_its_tokens(bpe_tokenizer, smol_tokenizer):
    from stages_of_inference.core.corpus import embedded_documents

    docs = embedded_documents()[:15]
    for tok in (bpe_tokenizer, smol_tokenizer):
        ids, words = scan_corpus(docs, tok)
        assert len(words) > 500
        for w in words[::7]:
            assert tok.decode(ids[w.doc][w.first : w.last + 1].tolist()).strip() == w.word
            assert docs[w.doc][w.char_start : w.char_start + len(w.word)] == w.word


def test_prompt_sets(bpe_tokenizer):
    docs = [TEXT * 3, "a b c " * 30 + " carefully considered workings of the unbelievably lazy dog"]
    spec = SubjoinerSettings(context_tokens=8, n_prompts=50, max_subtokens=4, max_per_word=2, seed=1)
    prompts = build_prompts(docs, bpe_tokenizer, spec, "m")
    assert set(prompts["kind"]) == {"multi", "single"}
    ids_by_doc, _ = scan_corpus(docs, bpe_tokenizer)
    for _, p in prompts.iterrows():
        k = p["n_subtokens"]
        assert (k == 1) == (p["kind"] == "single") and k <= 4
        assert len(p["input_ids"]) == 1 + 8 + k and p["input_ids"][0] == bpe_tokenizer.bos_token_id
        # the prompt ends with the word's tokens, in the document's own tokenization
        tail = bpe_tokenizer.decode(p["input_ids"][-k:]).strip()
        assert tail == p["word"]
        assert bpe_tokenizer.decode(p["input_ids"][-k - 1 :]).strip().endswith(p["word"])
    assert prompts["word"].value_counts().max() <= 2
    # seeded
    again = build_prompts(docs, bpe_tokenizer, spec, "m")
    assert again["input_ids"].tolist() == prompts["input_ids"].tolist()


def test_score_formula_by_hand():
    # two layers, one head each, T = 6; multi prompts with k = 2 and 3, one single prompt
    def row(values):
        return np.array(values, dtype=float).reshape(1, 1, -1).repeat(2, axis=0)

    multi = [row([0.1, 0.1, 0.1, 0.1, 0.5, 0.1]), row([0.1, 0.1, 0.2, 0.3, 0.2, 0.1])]
    single = [row([0.3, 0.1, 0.1, 0.2, 0.2, 0.1])]
    s = head_scores(multi, [2, 3], single)
    word = (0.5 + (0.3 + 0.2)) / 2
    control = 0.5 * 0.2 + 0.5 * (0.2 + 0.2)  # m=1 and m=2 weighted like k-1
    assert s["word_attention"][0, 0] == pytest.approx(word)
    assert s["control_attention"][0, 0] == pytest.approx(control)
    assert s["score"][1, 0] == pytest.approx(word - control)


def _continues(prev: str, cur: str) -> bool:
    return bool(cur) and cur[0].isalpha() and bool(prev) and prev[-1].isalpha()


@pytest.mark.slow  # one of the longest: `make test` runs it
def test_planted_subjoiner_head_ranks_first(bpe_tokenizer):
    """On a random model, force head (2, 1) to attend from the last token to the earlier
    sub-tokens of its word (found here from token strings, independently of the package's
    offsets) and head (1, 0) to be a previous-token head: the first must rank first, the
    second must score about 0 (the single-token control cancels it).

    The patterns are planted with plain forward hooks on the transformers attention modules
    (registered before the engine's, so the engine's ``attn.hook_pattern`` reads them)."""
    from stages_of_inference.core.corpus import embedded_documents
    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    strings = [bpe_tokenizer.decode([i]) for i in range(len(bpe_tokenizer))]
    seen = {}

    def grab_ids(module, args):
        seen["ids"] = args[0].tolist()

    def plant(fn):
        def hook(module, args, output):
            attn_out, pattern = output[0], output[1].clone()
            fn(pattern)
            return (attn_out, pattern, *output[2:])

        return hook

    def subjoiner(pattern):
        for b, ids in enumerate(seen["ids"]):
            q = len(ids) - 1
            j = q
            while j > 0 and _continues(strings[ids[j - 1]], strings[ids[j]]):
                j -= 1
            if j < q:  # the word has earlier sub-tokens j..q-1
                pattern[b, 1, q, :] = 0
                pattern[b, 1, q, j:q] = 1.0 / (q - j)

    def previous_token(pattern):
        pattern[:, 0, -1, :] = 0
        pattern[:, 0, -1, -2] = 1

    handles = [hf.model.embed_tokens.register_forward_pre_hook(grab_ids),
               hf.model.layers[2].self_attn.register_forward_hook(plant(subjoiner)),
               hf.model.layers[1].self_attn.register_forward_hook(plant(previous_token))]
    try:
        engine = Engine(hf, attn_implementation="eager")
        assert engine.model is hf  # the planted hooks are on the modules the engine runs
        settings = SubjoinerSettings(n_prompts=40, context_tokens=12, seed=0, n_examples=3)
        prompts, scores, examples = analyse(engine, bpe_tokenizer, embedded_documents()[:30], settings, "planted")
    finally:
        for handle in handles:
            handle.remove()
    top = scores.sort_values("rank").iloc[0]
    assert (top["layer"], top["head"]) == (2, 1)
    assert top["word_attention"] == pytest.approx(1.0, abs=1e-4)
    assert top["score"] > 0.5
    prev = scores.set_index(["layer", "head"]).loc[(1, 0)]
    assert abs(prev["score"]) < 1e-4 and prev["word_attention"] == pytest.approx(1.0, abs=1e-4)
    others = scores[(scores["layer"] != 2) | (scores["head"] != 1)]
    assert others["score"].max() < top["score"] - 0.3
    # the score table: every (layer, head) once, relative depth, ranks 1..n
    assert len(scores) == 4 * 4 and scores[["layer", "head"]].drop_duplicates().shape[0] == 16
    np.testing.assert_allclose(scores["rel_depth"], scores["layer"] / 3)
    assert sorted(scores["rank"]) == list(range(1, 17))
    # examples: the top head's rows, random prompts of both kinds, tokens as labels
    assert set(examples["kind"]) == {"multi", "single"}
    assert (examples[["layer", "head"]].drop_duplicates().to_numpy() == [[2, 1]]).all()
    multi_rows = examples[(examples["kind"] == "multi")]
    word_mass = multi_rows[multi_rows["in_word"] & ~multi_rows["is_query"]].groupby("example")["attention"].sum()
    assert np.allclose(word_mass.to_numpy(), 1.0, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3_text"])
def test_last_query_attention_matches_plain_transformers(arch, bpe_tokenizer):
    """Every head's attention row from the last position, read by the engine (prompts of
    several lengths, batched by length, batches of 2), equals the last row of
    ``output_attentions`` of an independent eager transformers forward pass, prompt by prompt."""
    import copy

    import torch

    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model(arch, bpe_tokenizer)
    engine = Engine(copy.deepcopy(hf), attn_implementation="eager")
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(2, len(bpe_tokenizer), (n,), generator=g).tolist() for n in (7, 9, 7, 5, 9, 7, 7)]
    rows = last_query_attention(engine, prompts, batch_size=2)
    assert len(rows) == len(prompts)
    for prompt, row in zip(prompts, rows):
        with torch.no_grad():
            out = hf(torch.tensor([prompt]), output_attentions=True)
        expected = torch.stack([a[0, :, -1, :] for a in out.attentions]).numpy()  # [n_layers, n_heads, T]
        assert row.shape == expected.shape == (4, 4, len(prompt))
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row.sum(-1), 1.0, atol=1e-5)


def test_last_query_attention_runs_no_unembedding(bpe_tokenizer):
    """Patterns need no logits: the pass stops after the last block (the unembedding and
    final norm never run)."""
    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("llama", bpe_tokenizer)
    engine = Engine(hf, attn_implementation="eager")
    calls = []
    handles = [hf.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
               hf.model.norm.register_forward_hook(lambda *a: calls.append("norm"))]
    try:
        last_query_attention(engine, [[1, 5, 7, 9], [1, 4, 6, 8]], batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == []


def test_last_query_attention_gemma3_sliding_window(bpe_tokenizer):
    """Gemma 3 (tiny: window 4, layers sliding / full / sliding / full): in a sliding-window
    layer the last query sees only the last 4 keys (itself included), in a full-attention
    layer every key; each row still sums to 1. The rows equal a hand computation of the
    last query's softmax(q·k / sqrt(query_pre_attn_scalar)) over the keys its layer lets it
    see, from the q and k (after QK-norm and RoPE) that the transformers attention module
    itself computes, captured with hooks on its q/k norms and its rotary embedding."""
    import copy

    import torch
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    from stages_of_inference.core.engine import Engine

    from conftest import tiny_hf_model

    hf = tiny_hf_model("gemma3_text", bpe_tokenizer)
    config = hf.config
    window, n_heads, n_kv = config.sliding_window, config.num_attention_heads, config.num_key_value_heads
    assert window == 4 and config.layer_types[:2] == ["sliding_attention", "full_attention"]
    engine = Engine(copy.deepcopy(hf), attn_implementation="eager")
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(2, len(bpe_tokenizer), (n,), generator=g).tolist() for n in (11, 11, 8)]
    rows = last_query_attention(engine, prompts, batch_size=2)

    seen = {}
    handles = []
    for layer, block in enumerate(hf.model.layers):
        attn = block.self_attn
        handles.append(attn.q_norm.register_forward_hook(
            lambda m, a, out, layer=layer: seen.__setitem__(("q", layer), out.detach())))
        handles.append(attn.k_norm.register_forward_hook(
            lambda m, a, out, layer=layer: seen.__setitem__(("k", layer), out.detach())))
        handles.append(block.register_forward_pre_hook(
            lambda m, a, kw, layer=layer: seen.__setitem__(("rope", layer), kw["position_embeddings"]),
            with_kwargs=True))
    try:
        for prompt, row in zip(prompts, rows):
            T = len(prompt)
            with torch.no_grad():
                hf(torch.tensor([prompt]))
            for layer, kind in enumerate(config.layer_types):
                cos, sin = seen[("rope", layer)]
                q, k = apply_rotary_pos_emb(seen[("q", layer)], seen[("k", layer)], cos, sin)  # [1, H, T, d]
                k = k.repeat_interleave(n_heads // n_kv, dim=1)
                scores = (q[0, :, -1:] @ k[0].transpose(-1, -2))[:, 0] / config.query_pre_attn_scalar ** 0.5  # [H, T]
                visible = torch.arange(T) > T - 1 - window if kind == "sliding_attention" else torch.ones(T, dtype=bool)
                expected = scores.masked_fill(~visible, float("-inf")).softmax(-1).numpy()
                np.testing.assert_allclose(row[layer], expected, rtol=1e-4, atol=1e-6)
                if kind == "sliding_attention":
                    assert (row[layer][:, : T - window] == 0).all()
                    assert (row[layer][:, T - window :] > 0).all()
                else:
                    assert (row[layer] > 0).all()
                np.testing.assert_allclose(row[layer].sum(-1), 1.0, atol=1e-5)
    finally:
        for handle in handles:
            handle.remove()
