"""Words of a text and the tokens that spell them (Figures 9 and 10).

Word boundaries come from the *text*, never from the tokenizer's word-start markers:
a word is a maximal run of ASCII letters, and the tokens that spell it are found through
the fast tokenizer's character offsets (``return_offsets_mapping``). That works the same
for byte-level BPE (GPT-2, Pythia, SmolLM2: ``Ġword``), SentencePiece (``▁word``) and
tokenizers with no marker at all, and whether or not the offsets of a word-initial token
include the space before it.

The tokens of a word are the tokens whose character span overlaps the word's letters. A
token that is only the space before the word (byte-level BPE with a small vocabulary
gives ``Ġ`` on its own) is not one of them. A word is *aligned* when its first token
holds nothing but whitespace before the word and its last token ends exactly where the
word ends; a word whose tokens also spell a neighbour (``"s runn"``, ``"g,"``) is skipped.

Only standalone lower-case words inside a line are used: letters only, preceded by
exactly one space that follows a non-whitespace character, and followed by whitespace or
the end of the text, possibly after closing punctuation ``.,;:!?)"`` (so ``dog,`` but not
``x.append``, ``foo_bar``, ``don't`` nor ``2nd``). The authors' notebook likewise ended
its prompts in lower-case, letters-only words, always after one space: it split each text
on whitespace, dropped the words with a digit or a punctuation character (``dog,``
included), and joined 16 of the rest and the word with single spaces.

Words at the start of a line or after several spaces are left out: tokenizers spell them
without their word-start marker. Gemma's SentencePiece-style BPE merges a run of spaces
into one token: ``"  themselves"`` is ``▁▁`` ``the`` ``mselves`` and, after a newline,
``ultimately`` is ``ult`` ``imately``, while ``" themselves"`` and ``" ultimately"`` are
one token each (``▁themselves``, ``▁ultimately``); byte-level BPE spells a word right
after a newline without ``Ġ``. Such words are split far more often than the same words
inside a line (in the embedded corpus, 47% of Gemma 3's multi-token words against 8% of
its single-token words; SmolLM2: 34% against 7%), so the multi-token prompts would end
mostly at line starts, and a head that looks at line starts would pass for a sub-joiner.
Byte-fallback tokens (a character outside Gemma's vocabulary as ``<0xF0>`` ``<0x90>`` ...,
all with that character's offsets) never spell an ASCII word and may precede one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

WORD_RE = re.compile(r"[A-Za-z]+")
FOLLOWERS = set(".,;:!?)\"")


@dataclass(frozen=True)
class WordTokens:
    """A standalone lower-case word of document ``doc`` and the tokens that spell it.

    ``first``/``last`` index the document's token ids (inclusive); ``n_subtokens`` is
    ``last - first + 1``.
    """

    doc: int
    word: str
    char_start: int
    first: int
    last: int

    @property
    def n_subtokens(self) -> int:
        return self.last - self.first + 1


def require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is a slow tokenizer and cannot return character "
            f"offsets; word boundaries need a fast (tokenizers-backed) tokenizer. Load it "
            f"with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


def encode_with_offsets(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``[n]`` and character offsets ``[n, 2]`` of ``text`` (no special tokens)."""
    require_fast(tokenizer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, offsets


def is_standalone(text: str, start: int, end: int) -> bool:
    """Lower-case letters only; one space before, itself after a non-whitespace character
    (inside a line); whitespace, the end or closing punctuation after."""
    word = text[start:end]
    if not word.islower() or not word.isalpha():
        return False
    if start < 2 or text[start - 1] != " " or text[start - 2].isspace():
        return False
    # up to the next whitespace only closing punctuation may follow ("dog," but not "x.y")
    rest = end
    while rest < len(text) and not text[rest].isspace():
        if text[rest] not in FOLLOWERS:
            return False
        rest += 1
    return True


def align(text: str, offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """Inclusive token range spelling ``text[start:end]``, or None if not aligned.

    Tokens overlap the word when ``tok_start < end`` and ``tok_end > start``.
    """
    if len(offsets) == 0:
        return None
    ends = offsets[:, 1]
    starts = offsets[:, 0]
    first = int(np.searchsorted(ends, start, side="right"))  # first token ending after start
    last = int(np.searchsorted(starts, end, side="left")) - 1  # last token starting before end
    if first >= len(offsets) or last < first:
        return None
    if ends[last] != end:
        return None  # the last token runs past the word (or stops short of it)
    lead = text[starts[first] : start]
    if starts[first] > start or (lead and not lead.isspace()):
        return None  # the first token also spells the end of the previous word
    # offsets must be monotone inside the word (no token re-covering other text)
    span = offsets[first : last + 1]
    if (span[:, 0] < starts[first]).any() or (span[:, 1] > end).any():
        return None
    return first, last


def document_words(doc: int, text: str, offsets: np.ndarray) -> Iterator[WordTokens]:
    """Every aligned standalone lower-case word of one document, in order."""
    for match in WORD_RE.finditer(text):
        start, end = match.span()
        if not is_standalone(text, start, end):
            continue
        span = align(text, offsets, start, end)
        if span is None:
            continue
        yield WordTokens(doc=doc, word=match.group(), char_start=start, first=span[0], last=span[1])


def scan_corpus(documents: Iterable[str], tokenizer) -> tuple[list[np.ndarray], list[WordTokens]]:
    """Tokenize every document once; return their token ids and all their words."""
    all_ids: list[np.ndarray] = []
    words: list[WordTokens] = []
    for doc, text in enumerate(documents):
        ids, offsets = encode_with_offsets(tokenizer, text)
        all_ids.append(ids)
        words.extend(document_words(doc, text, offsets))
    return all_ids, words


def cap_per_word(candidates: list, max_per_word: int, rng: np.random.Generator) -> list:
    """Shuffle ``candidates`` (seeded) and keep at most ``max_per_word`` per word string,
    so frequent words (``the``, ``string``) do not fill a prompt set on their own."""
    order = rng.permutation(len(candidates))
    seen: dict[str, int] = {}
    kept = []
    for i in order:
        c = candidates[int(i)]
        if seen.get(c.word, 0) < max_per_word:
            seen[c.word] = seen.get(c.word, 0) + 1
            kept.append(c)
    return kept


def display_token(tokenizer, token_id: int) -> str:
    """A token as a short printable label: leading space shown as ``␣``, newlines as ``⏎``."""
    text = tokenizer.decode([int(token_id)])
    text = text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    if text.startswith(" "):
        text = "␣" + text[1:]
    return text if text else "∅"


def bos_prefix(tokenizer) -> list[int]:
    """``[BOS]`` when the tokenizer has one (the project's sequence convention), else ``[]``."""
    bos = tokenizer.bos_token_id
    return [int(bos)] if bos is not None else []


def corpus_documents(corpus: dict) -> list[str]:
    """The documents of the configured corpus (the ``corpus`` config section): both case
    studies read words from the texts themselves, not from the sampled token windows."""
    from ..core.corpus import CorpusSettings, iter_documents

    return list(iter_documents(CorpusSettings.from_config(corpus)))
