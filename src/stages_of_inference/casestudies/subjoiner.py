"""Sub-joiner heads (FIGURES.md, Figure 9).

A *sub-joiner* head attends, from the last sub-token of a word that the tokenizer splits
into several tokens, to the earlier sub-tokens of the same word.

Prompts (``build_prompts``). From the configured corpus, every standalone lower-case word
(:mod:`stages_of_inference.casestudies.words`) whose tokens are preceded by at least
``context_tokens`` tokens of the same document gives a candidate prompt::

    [BOS] + <context_tokens tokens of the document> + <the word's tokens>

so the prompt ends with the word and every prompt has the same number of tokens before
the word (the authors' notebook put 16 *words* before it, so its token counts varied).
*Multi-token* prompts end in a word of
2..``max_subtokens`` tokens, *single-token* prompts in a word of one token. Candidates
are shuffled with ``seed`` and capped at ``max_per_word`` per word string before the
first ``n_prompts`` of each kind are kept.

Score (``head_scores``). Let ``a_h(q → p)`` be head ``h``'s attention from the last
position ``q`` to key position ``p``. For a multi-token prompt whose word has ``k``
sub-tokens, the *word attention* is ``A = Σ_{j=1}^{k-1} a_h(q → q-j)``: the mass on the
word's earlier sub-tokens. The *control* is the same quantity measured on single-token
prompts at the same relative key positions: ``C_m = Σ_{j=1}^{m} a_h(q → q-j)`` on a
prompt ending in a one-token word, i.e. attention from the last token of a single-token
word to the ``m`` tokens before it (the end of the previous words). The control is
averaged over the single-token prompts with ``m`` weighted like ``k-1`` over the
multi-token prompts, so both sides cover the same relative positions::

    score(h) = mean_multi A  -  Σ_m w_m · mean_single C_m,   w_m = P_multi(k-1 = m)

A head that only attends to the previous few tokens scores about 0; a sub-joiner scores
up to 1. The standard error combines the two independent means. The top head is the
argmax over all (layer, head) of the model: found from the data, never hard-coded.

Examples (``examples``). For the top head, attention rows of ``n_examples`` prompts of
each kind drawn at random with ``seed``. The authors' notebook drew its single-token rows
at random too, but its four-token rows only among prompts whose attention from the last
token passed hand-set thresholds on that very head (above 0.4, 0.23 and 0.1 on the word's
three earlier sub-tokens, below 0.07 two tokens before the word), which flatters it.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import ClassVar, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..core.metrics import rel_depth
from ..core.settings import Settings
from .words import bos_prefix, cap_per_word, display_token, scan_corpus

log = logging.getLogger(__name__)

KINDS = ("multi", "single")
PROMPT_COLUMNS = ["model", "prompt_id", "kind", "word", "n_subtokens", "doc", "char_start",
                  "n_tokens", "input_ids", "tokens"]
SCORE_COLUMNS = ["model", "layer", "head", "n_layers", "n_heads", "rel_depth", "score", "score_se",
                 "word_attention", "control_attention", "n_multi", "n_single", "rank"]
EXAMPLE_COLUMNS = ["model", "layer", "head", "kind", "example", "prompt_id", "word", "n_subtokens",
                   "position", "token", "attention", "in_word", "is_query"]


class SubjoinerSettings(Settings):
    """``casestudies.subjoiner`` (keys and defaults: config/schema.yaml)."""

    section: ClassVar[str] = "casestudies.subjoiner"

    def check(self) -> None:
        if self.context_tokens < self.max_subtokens:
            raise ValueError(f"casestudies.subjoiner.context_tokens is {self.context_tokens}; use at least "
                             f"max_subtokens ({self.max_subtokens}).")


# -- prompts ----------------------------------------------------------------------------


def build_prompts(documents: Iterable[str], tokenizer, settings: SubjoinerSettings, model: str = "") -> pd.DataFrame:
    """Multi-token and single-token prompt sets (see the module docstring)."""
    ids, words = scan_corpus(documents, tokenizer)
    bos = bos_prefix(tokenizer)
    c = settings.context_tokens
    pools = {
        "multi": [w for w in words if 2 <= w.n_subtokens <= settings.max_subtokens and w.first >= c],
        "single": [w for w in words if w.n_subtokens == 1 and w.first >= c],
    }
    rng = np.random.default_rng(settings.seed)
    rows = []
    for kind in KINDS:
        chosen = cap_per_word(pools[kind], settings.max_per_word, rng)[: settings.n_prompts]
        log.info("%s: %d candidate %s-token words, %d prompts kept", model, len(pools[kind]), kind, len(chosen))
        for w in chosen:
            prompt = bos + ids[w.doc][w.first - c : w.last + 1].tolist()
            rows.append(
                {
                    "model": model,
                    "prompt_id": len(rows),
                    "kind": kind,
                    "word": w.word,
                    "n_subtokens": w.n_subtokens,
                    "doc": w.doc,
                    "char_start": w.char_start,
                    "n_tokens": len(prompt),
                    "input_ids": prompt,
                    "tokens": [display_token(tokenizer, t) for t in prompt],
                }
            )
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS)


# -- attention --------------------------------------------------------------------------


@torch.no_grad()
def last_query_attention(engine, prompts: Sequence[Sequence[int]], batch_size: int = 16) -> list[np.ndarray]:
    """For each prompt, every head's attention from the last position: ``[n_layers, n_heads, T]``.

    ``engine``: a :class:`~stages_of_inference.core.engine.Engine` with eager attention.
    Prompts are batched by length (no padding); each batch is one pass that stops after the
    last block (no unembedding), with a capture of the last query's row of
    ``blocks.{L}.attn.hook_pattern``. Out-of-memory halves the batch
    (:func:`~stages_of_inference.core.engine.batched`).
    """
    from ..core.engine import batched, hook_name

    n_layers = engine.n_layers
    out: list[np.ndarray | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_length[len(p)].append(i)

    def run(index: list[int]) -> None:
        rows: list[torch.Tensor | None] = [None] * n_layers

        def capture(layer):
            def hook(pattern):
                rows[layer] = pattern[:, :, -1, :].detach().float().cpu()

            return hook

        ids = torch.tensor([list(prompts[i]) for i in index], dtype=torch.long, device=engine.device)
        # run every block, stop before the final norm: no unembedding
        engine.run_to(ids, n_layers,
                      [(hook_name(layer, "attn.hook_pattern"), capture(layer)) for layer in range(n_layers)])
        if any(r is None for r in rows):
            raise RuntimeError("blocks.{L}.attn.hook_pattern did not fire for every layer.")
        stacked = torch.stack(rows, dim=1).numpy()  # [B, n_layers, n_heads, T]
        for j, i in enumerate(index):
            out[i] = stacked[j]

    for length in sorted(by_length):
        index = by_length[length]
        batched(len(index), batch_size, lambda start, stop: run(index[start:stop]))
    return out  # type: ignore[return-value]


def head_scores(word_attn: Sequence[np.ndarray], n_subtokens: Sequence[int],
                single_attn: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-head sub-joiner score (module docstring). Inputs are last-query attention rows
    ``[n_layers, n_heads, T]``; returns ``[n_layers, n_heads]`` arrays ``score``,
    ``score_se``, ``word_attention`` (mean A) and ``control_attention`` (weighted mean C)."""
    k = np.asarray(n_subtokens, dtype=int)
    if len(word_attn) == 0 or len(single_attn) == 0:
        raise ValueError("need at least one multi-token and one single-token prompt")
    if (k < 2).any():
        raise ValueError("multi-token prompts need n_subtokens >= 2")
    word = np.stack([a[:, :, a.shape[-1] - ki : a.shape[-1] - 1].sum(-1) for a, ki in zip(word_attn, k)])
    m_max = int(k.max()) - 1
    weights = np.bincount(k - 1, minlength=m_max + 1)[1:] / len(k)  # w_m, m = 1..m_max
    control_rows = []
    for a in single_attn:
        if a.shape[-1] < m_max + 1:
            raise ValueError("single-token prompts are shorter than the longest word")
        before = a[:, :, -2 : -(m_max + 2) : -1]  # q-1, q-2, ..., q-m_max
        control_rows.append((np.cumsum(before, axis=-1) * weights).sum(-1))
    control = np.stack(control_rows)
    n, s = len(word), len(control)
    var_w = word.var(0, ddof=1) / n if n > 1 else np.zeros(word.shape[1:])
    var_c = control.var(0, ddof=1) / s if s > 1 else np.zeros(control.shape[1:])
    return {
        "score": word.mean(0) - control.mean(0),
        "score_se": np.sqrt(var_w + var_c),
        "word_attention": word.mean(0),
        "control_attention": control.mean(0),
    }


def score_table(scores: dict[str, np.ndarray], model: str, n_multi: int, n_single: int) -> pd.DataFrame:
    n_layers, n_heads = scores["score"].shape
    layer, head = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    df = pd.DataFrame(
        {
            "model": model,
            "layer": layer.ravel().astype(np.int32),
            "head": head.ravel().astype(np.int32),
            "n_layers": n_layers,
            "n_heads": n_heads,
            "rel_depth": rel_depth(layer.ravel(), n_layers),
            **{key: value.ravel() for key, value in scores.items()},
            "n_multi": n_multi,
            "n_single": n_single,
        }
    )
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(np.int32)
    return df[SCORE_COLUMNS]


def examples(prompts: pd.DataFrame, attention: Sequence[np.ndarray], layer: int, head: int,
             settings: SubjoinerSettings, model: str = "") -> pd.DataFrame:
    """Attention rows of the top head for ``n_examples`` random prompts of each kind."""
    rng = np.random.default_rng(settings.seed + 1)
    rows = []
    for kind in KINDS:
        pool = prompts.index[prompts["kind"] == kind].to_numpy()
        pick = rng.choice(pool, size=min(settings.n_examples, len(pool)), replace=False) if len(pool) else []
        for example, i in enumerate(pick):
            p = prompts.loc[i]
            row = attention[i][layer, head]
            width = min(settings.show_positions, len(row))
            k = int(p["n_subtokens"])
            for offset in range(-width + 1, 1):
                rows.append(
                    {
                        "model": model,
                        "layer": layer,
                        "head": head,
                        "kind": kind,
                        "example": example,
                        "prompt_id": int(p["prompt_id"]),
                        "word": p["word"],
                        "n_subtokens": k,
                        "position": offset,
                        "token": p["tokens"][len(row) - 1 + offset],
                        "attention": float(row[len(row) - 1 + offset]),
                        "in_word": offset > -k,
                        "is_query": offset == 0,
                    }
                )
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def analyse(engine, tokenizer, documents: Iterable[str], settings: SubjoinerSettings, model: str = ""):
    """Prompts, per-head scores and the top head's example rows for one model.

    ``engine``: an :class:`~stages_of_inference.core.engine.Engine` with eager attention
    (``engine_for_job(manifest, runtime, "eager")``). Returns ``(prompts, scores,
    examples)`` DataFrames; ``scores`` and ``examples`` are empty (with their columns) when
    the corpus gives no prompt of one kind.
    """
    log.info("%s: sub-joiner heads with %s", model, settings.to_dict())
    prompts = build_prompts(documents, tokenizer, settings, model)
    counts = prompts["kind"].value_counts()
    n_multi, n_single = int(counts.get("multi", 0)), int(counts.get("single", 0))
    if n_multi == 0 or n_single == 0:
        log.warning(
            "%s: %d multi-token and %d single-token prompts; sub-joiner scores need both. "
            "Use a larger corpus or a smaller casestudies.subjoiner.context_tokens.",
            model, n_multi, n_single,
        )
        return prompts, pd.DataFrame(columns=SCORE_COLUMNS), pd.DataFrame(columns=EXAMPLE_COLUMNS)
    attention = last_query_attention(engine, prompts["input_ids"].tolist(), settings.batch_size)
    multi = prompts.index[prompts["kind"] == "multi"]
    single = prompts.index[prompts["kind"] == "single"]
    scores = head_scores([attention[i] for i in multi], prompts.loc[multi, "n_subtokens"].to_numpy(),
                         [attention[i] for i in single])
    table = score_table(scores, model, n_multi, n_single)
    top = table.loc[table["rank"] == 1].iloc[0]
    log.info("%s: top sub-joiner head L%dH%d, score %.3f ± %.3f (word %.3f vs control %.3f)", model,
             top["layer"], top["head"], top["score"], top["score_se"], top["word_attention"],
             top["control_attention"])
    ex = examples(prompts, attention, int(top["layer"]), int(top["head"]), settings, model)
    return prompts, table, ex
