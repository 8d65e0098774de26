"""Sequence-continuation task prompts: seeded, single-token, equal length per task.

Four item families (the first three after the seqcont_circuits repository of Lan, Torr &
Barez, whose numerals, number words and months run 1/one/January .. 12/twelve/December;
weekdays are ours):

* ``digits``   1 .. 9 (10-12 are never single tokens for digit-splitting tokenizers),
* ``numwords`` one .. twelve,
* ``months``   January .. December (cyclic: December is followed by January),
* ``weekdays`` Monday .. Sunday (cyclic).

Each family has two variants, giving the task names ``<family>`` and ``<family>_words``:

* plain:        ``"1, 2, 3,"`` -> answer ``" 4"``
* among words:  ``"apple, 1, table, 2, chair, 3, river,"`` -> ``" 4"`` (random filler
  words, drawn per prompt, interleaved with the items).

Pieces are joined by ``separator`` (default ``", "``: SmolLM2-135M continues "one, two,
three," with " four" but not "one two three"; the repository used sentence templates).

Every clean prompt has a matched corrupted prompt with the same filler words and the same
token positions:

* ``random`` (default, the repository's ``randDS``): items drawn at random, with
  replacement, from the task's single-token items, the last two redrawn until the last
  shown item is not the successor of the one before (its ``r4 - 1 != r3``);
* ``repeat_last``: the clean items with the last shown item repeated (``1 2 3 3``).

The answer is the item after the last shown item; the *incorrect* answer of the logit
difference is the last shown item itself (the repository's ``incorr``).

Single tokens: the prompt text plus answer is tokenized once (no special tokens) with
character offsets; a prompt survives only if every item and the answer occupy exactly one
token (the token may include the item's leading space, or the space may be its own token
as in tokenizers that split digits, e.g. ``"Ġ" "5"``). The model input is ``[BOS] +`` the
tokens before the answer token, so a space-split tokenizer's prompt ends in the space
token. Within a task only prompts of the task's most common token length are kept (clean
and corrupted alike), so a task batches without padding. ``counts`` reports how many
candidates survive each step.
"""
from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import pandas as pd

from ..core.settings import Settings

log = logging.getLogger(__name__)

FAMILIES = {
    "digits": [str(i) for i in range(1, 13)],
    "numwords": "one two three four five six seven eight nine ten eleven twelve".split(),
    "months": (
        "January February March April May June July August September October November December"
    ).split(),
    "weekdays": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
}
CYCLIC = {"months", "weekdays"}
VARIANTS = ("plain", "words")
TASKS = tuple(f + ("" if v == "plain" else "_words") for v in VARIANTS for f in FAMILIES)
CORRUPTIONS = ("random", "repeat_last")

# Common short nouns (our own list); only those that are single tokens with a leading space
# for the model's tokenizer are used as fillers.
FILLER_WORDS = (
    "apple table chair house river garden window bottle pencil street market forest ocean "
    "mountain village bridge doctor teacher kitchen letter flower picture basket carpet "
    "engine island jacket ladder mirror needle orange pepper rabbit saddle tomato wagon "
    "castle butter candle cotton desert dinner farmer finger hammer lemon monkey paper "
    "pocket silver summer tunnel winter yellow bird book cat dog door fish horse king lamp "
    "moon ship shoe star tree wall water wind car box cup hat map pen sun egg bed key"
).split()

PROMPT_COLUMNS = [
    "task", "family", "variant", "prompt", "start", "text", "corrupt_text", "items",
    "corrupt_items", "answer", "incorrect", "input_ids", "corrupt_ids", "answer_id",
    "incorrect_id", "n_tokens",
]
COUNT_COLUMNS = ["task", "family", "variant", "n_single_token_items", "n_fillers",
                 "n_candidates", "n_single_token", "n_same_length", "n_kept"]


def task_parts(task: str) -> tuple[str, str]:
    """``"months_words"`` -> ``("months", "words")``; ``"digits"`` -> ``("digits", "plain")``."""
    family, _, variant = task.partition("_")
    variant = variant or "plain"
    if family not in FAMILIES or variant not in VARIANTS:
        raise ValueError(f"Unknown seqcont task {task!r}; use one of {', '.join(TASKS)}.")
    return family, variant


class SeqcontSettings(Settings):
    """The ``seqcont:`` config section (keys, defaults and allowed values: config/schema.yaml)."""

    section: ClassVar[str] = "seqcont"


# --------------------------------------------------------------------------------------
# Tokenizer checks


def _encode(tokenizer, text: str):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def item_token(tokenizer, word: str) -> int | None:
    """The single token ``word`` becomes after a space (``" w"`` -> ``[t]`` or
    ``[space, t]``), or None when it is more than one token."""
    ids, offsets = _encode(tokenizer, " " + word)
    covering = [i for i, (a, b) in enumerate(offsets) if a < len(word) + 1 and b > 1]
    if len(covering) != 1:
        return None
    a, b = offsets[covering[0]]
    if a not in (0, 1) or b != len(word) + 1:
        return None
    return int(ids[covering[0]])


def single_token_items(tokenizer, words) -> list[str]:
    return [w for w in words if item_token(tokenizer, w) is not None]


def filler_words(tokenizer) -> list[str]:
    """Filler words that are one token with a leading space (and alone, for the first)."""
    out = []
    for w in FILLER_WORDS:
        ids, _ = _encode(tokenizer, " " + w)
        alone, _ = _encode(tokenizer, w)
        if len(ids) == 1 and len(alone) == 1:
            out.append(w)
    return out


def _token_at(offsets, start: int, end: int) -> int | None:
    """Index of the one token covering characters ``start:end`` (possibly with the space
    before), or None when the span is split across tokens or merged with a neighbour."""
    covering = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if len(covering) != 1:
        return None
    a, b = offsets[covering[0]]
    if a < start - 1 or b > end:
        return None
    if a == start - 1 and start == 0:
        return None
    return covering[0]


def _build(words: list[str] | None, items: list[str], answer: str, separator: str = ", "):
    """Text of ``items + answer`` (interleaved with ``words`` if given), pieces joined by
    ``separator``, and the character spans of every item and of the answer."""
    text, spans = "", []

    def add(piece, record):
        nonlocal text
        if text:
            text += separator
        if record:
            spans.append((len(text), len(text) + len(piece)))
        text += piece

    seq = [*items, answer]
    for k, item in enumerate(seq):
        if words is not None:
            add(words[k], False)
        add(item, True)
    return text, spans


def encode_prompt(tokenizer, bos: list[int], words, items, answer, separator: str = ", "):
    """(prompt ids, prompt text, answer id, incorrect id) or None if an item or the answer
    is not a single token in context."""
    text, spans = _build(words, items, answer, separator)
    ids, offsets = _encode(tokenizer, text)
    positions = [_token_at(offsets, a, b) for a, b in spans]
    if any(p is None for p in positions) or len(set(positions)) != len(positions):
        return None
    answer_pos = positions[-1]
    if answer_pos != len(ids) - 1:  # the answer must be the last token
        return None
    cut = offsets[answer_pos][0]
    return bos + [int(i) for i in ids[:answer_pos]], text[:cut], int(ids[answer_pos]), int(ids[positions[-2]])


# --------------------------------------------------------------------------------------
# Generation


def _sequences(family: str, pool: set[str], n_items: int) -> list[tuple[int, list[str], str]]:
    """Every run of ``n_items`` consecutive items plus the next one, all single tokens."""
    words = FAMILIES[family]
    n = len(words)
    starts = range(n) if family in CYCLIC else range(n - n_items)
    out = []
    for s in starts:
        seq = [words[(s + k) % n] for k in range(n_items + 1)]
        if all(w in pool for w in seq):
            out.append((s, seq[:-1], seq[-1]))
    return out


def _rand_ds(rng, family: str, pool: list[str], n_items: int) -> list[str]:
    """The repository's ``randDS`` corruption (``generate_prompts_list_corr``): every item
    drawn uniformly, with replacement; the last two redrawn until the last is not the
    successor of the one before (its ``r4 - 1 != r3``). Here from the task's single-token
    items, and December -> January counts as a successor pair (the cyclic families)."""
    words = FAMILIES[family]
    n = len(words)
    pick = [str(w) for w in rng.choice(pool, size=n_items - 2, replace=True)]
    while True:
        a, b = (str(w) for w in rng.choice(pool, size=2, replace=True))
        j = words.index(a) + 1
        if b != (words[j % n] if (family in CYCLIC or j < n) else None):
            return pick + [a, b]


def task_prompts(tokenizer, task: str, settings: SeqcontSettings, bos: list[int]) -> tuple[pd.DataFrame, dict]:
    """The kept prompts of one task and its survival counts."""
    family, variant = task_parts(task)
    rng = np.random.default_rng([settings.seed, TASKS.index(task)])
    pool = single_token_items(tokenizer, FAMILIES[family])
    fillers = filler_words(tokenizer) if variant == "words" else []
    counts = dict(task=task, family=family, variant=variant, n_single_token_items=len(pool),
                  n_fillers=len(fillers), n_candidates=0, n_single_token=0, n_same_length=0, n_kept=0)
    seqs = _sequences(family, set(pool), settings.n_items)
    if not seqs or len(pool) < 3 or (variant == "words" and len(fillers) < settings.n_items + 1):
        return pd.DataFrame(columns=PROMPT_COLUMNS), counts
    if variant == "plain":  # one prompt per start: plain prompts differ only there
        chosen = [seqs[i] for i in rng.permutation(len(seqs))]
    else:  # several draws of filler words per start, starts balanced
        reps = -(-2 * settings.n_prompts // len(seqs))
        chosen = [seqs[i] for r in range(reps) for i in rng.permutation(len(seqs))]
    rows = []
    for start, items, answer in chosen:
        counts["n_candidates"] += 1
        words = list(rng.choice(fillers, size=settings.n_items + 1, replace=False)) if fillers else None
        if settings.corruption == "random":
            bad = _rand_ds(rng, family, pool, settings.n_items)
        else:
            bad = [*items[:-1], items[-2]]
        clean = encode_prompt(tokenizer, bos, words, items, answer, settings.separator)
        corrupt = encode_prompt(tokenizer, bos, words, bad, answer, settings.separator)
        if clean is None or corrupt is None:
            continue
        counts["n_single_token"] += 1
        rows.append(dict(
            task=task, family=family, variant=variant, start=int(start), text=clean[1],
            corrupt_text=corrupt[1], items=list(items), corrupt_items=[str(b) for b in bad], answer=answer,
            incorrect=items[-1], input_ids=clean[0], corrupt_ids=corrupt[0], answer_id=clean[2],
            incorrect_id=clean[3], n_tokens=len(clean[0]), corrupt_len=len(corrupt[0]),
        ))
    if not rows:
        return pd.DataFrame(columns=PROMPT_COLUMNS), counts
    df = pd.DataFrame(rows)
    length = int(df["n_tokens"].mode().min())
    df = df[(df["n_tokens"] == length) & (df["corrupt_len"] == length)]
    counts["n_same_length"] = len(df)
    df = df.drop_duplicates("text").head(settings.n_prompts).reset_index(drop=True)
    df["prompt"] = np.arange(len(df))
    counts["n_kept"] = len(df)
    return df[PROMPT_COLUMNS], counts


def make_prompts(tokenizer, settings: SeqcontSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(prompts, counts) for every task in ``settings.tasks`` (and ``settings.circuit_tasks``)."""
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
    tasks = list(dict.fromkeys([*settings.tasks, *settings.circuit_tasks]))
    frames, counts = [], []
    for task in tasks:
        df, c = task_prompts(tokenizer, task, settings, bos)
        frames.append(df)
        counts.append(c)
    nonempty = [f for f in frames if len(f)]
    prompts = pd.concat(nonempty, ignore_index=True) if nonempty else pd.DataFrame(columns=PROMPT_COLUMNS)
    return prompts, pd.DataFrame(counts, columns=COUNT_COLUMNS)


def model_prompts(tokenizer, settings: SeqcontSettings, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``seqcont_prompts`` rule's tables for one model: :func:`make_prompts` with the
    ``model`` as the first column of both; each task's survival counts are logged."""
    prompts, counts = make_prompts(tokenizer, settings)
    for c in counts.itertuples():
        log.info("%s %-15s %2d single-token items, %3d candidates, %3d single-token, %3d same length, %2d kept",
                 model, c.task, c.n_single_token_items, c.n_candidates, c.n_single_token, c.n_same_length, c.n_kept)
    prompts.insert(0, "model", model)
    counts.insert(0, "model", model)
    return prompts, counts
