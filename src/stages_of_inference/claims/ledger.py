"""The claims ledger: one row per (claim, model), computed from result tables only.

A claim is a function decorated with :func:`claim`. It receives the tables it names (read from
``results/{model}/<table>``) and returns a :class:`Finding`: the statistic that tests the claim,
its value, an interval (or standard error) where sampling allows, and a verdict reached by the
rule written next to the claim (``rule=``, one sentence, shown in the ledger). Family claims
(``scope="family"``) receive every model's tables at once and give one row for all models.

Verdicts: ``HOLDS``, ``FAILS`` ("does not hold"), ``INCONCLUSIVE`` (the interval straddles the
rule's threshold, or the tables cannot decide). Each rule is tested on tables where it must flip
(tests/claims/).

The registry is filled by importing the claim modules (:data:`CLAIM_MODULES`); ``build_ledger``
runs them all.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)

# Sources, as the ledger names them.
PAPER_V1 = "paper v1 (2024)"
PAPER_2025 = "paper (NeurIPS 2025)"
SELF_REPAIR = "self-repair study"
SEQCONT = "sequence-continuation study"
CONCEPTS = "concept-features study"

# Modules whose import registers claims (each a list of @claim functions).
CLAIM_MODULES = ("stages_of_inference.claims.paper", "stages_of_inference.claims.seeds")


@dataclass
class Finding:
    """What a claim's function returns for one model (or the family)."""

    statistic: str  # what was computed, in words ("mean top-1 retained, drops of middle blocks")
    value: float
    verdict: str  # HOLDS / FAILS / INCONCLUSIVE
    lo: float = math.nan  # interval, where sampling allows (e.g. 95 % bootstrap over documents)
    hi: float = math.nan
    se: float = math.nan
    detail: str = ""  # one short clause: the numbers behind the verdict

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Claim:
    id: str  # short slug, unique ("retained_accuracy_band")
    text: str  # the claim as its source states it
    source: str  # PAPER_V1, PAPER_2025, ...
    study: str  # the study whose models it applies to (core.models.STUDIES)
    tables: tuple[str, ...]  # file names under results/{model}/
    rule: str  # the verdict rule, one sentence
    evaluate: Callable = field(repr=False)
    scope: str = "model"  # "model": one row per model; "family": one row for all models


REGISTRY: dict[str, Claim] = {}


def claim(*, id, text, source, study, tables, rule, scope="model"):
    """Register the decorated function as a claim. Model scope: ``f(tables) -> Finding`` with
    ``tables[name]`` a DataFrame; family scope: ``f(tables_by_model) -> Finding`` with
    ``tables_by_model[model][name]``."""
    if scope not in ("model", "family"):
        raise ValueError(f"scope {scope!r}: use 'model' or 'family'")

    def register(fn):
        if id in REGISTRY and REGISTRY[id].evaluate is not fn:
            raise ValueError(f"claim id {id!r} registered twice")
        REGISTRY[id] = Claim(id=id, text=text, source=source, study=study, tables=tuple(tables), rule=rule,
                             evaluate=fn, scope=scope)
        return fn

    return register


def load_claims() -> dict[str, Claim]:
    for module in CLAIM_MODULES:
        importlib.import_module(module)
    return REGISTRY


def bootstrap_ci(groups, statistic, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap of ``statistic`` over independent groups (e.g. documents).

    ``groups`` is a list of arrays/frames (one per group); ``statistic(list_of_groups)`` a float.
    Returns (value, lo, hi, se)."""
    rng = np.random.default_rng(seed)
    value = float(statistic(groups))
    k = len(groups)
    if k < 2:
        return value, math.nan, math.nan, math.nan
    draws = np.array([statistic([groups[i] for i in rng.integers(0, k, k)]) for _ in range(n_boot)], dtype=float)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(draws, [alpha, 1 - alpha])
    return value, float(lo), float(hi), float(np.nanstd(draws, ddof=1))


def above(lo: float, hi: float, threshold: float) -> str:
    """Verdict of "the statistic exceeds threshold" from its interval (no interval: the point)."""
    if lo > threshold:
        return HOLDS
    if hi < threshold:
        return FAILS
    return INCONCLUSIVE


def below(lo: float, hi: float, threshold: float) -> str:
    """Verdict of "the statistic is below threshold" from its interval."""
    return above(-hi, -lo, -threshold)


def within(lo: float, hi: float, low: float, high: float, *, closed_low: bool = False,
           closed_high: bool = False) -> str:
    """Verdict of "the statistic lies in the band (low, high)" (``closed_*``: that end
    included) from its interval: HOLDS when the whole interval is inside, FAILS when it is
    wholly outside on one side, INCONCLUSIVE otherwise (also without an interval: NaN)."""
    inside_low = lo >= low if closed_low else lo > low
    inside_high = hi <= high if closed_high else hi < high
    out_low = hi < low if closed_low else hi <= low
    out_high = lo > high if closed_high else lo >= high
    if inside_low and inside_high:
        return HOLDS
    if out_low or out_high:
        return FAILS
    return INCONCLUSIVE


def undecided(statistic: str, why: str) -> Finding:
    """The tables cannot decide (an empty table, a column an older run lacks, too few layers)."""
    return Finding(statistic=statistic, value=math.nan, verdict=INCONCLUSIVE, detail=why)


COLUMNS = ["claim", "model", "source", "text", "statistic", "value", "lo", "hi", "se", "verdict", "rule",
           "detail"]


def build_ledger(tables_by_model: dict[str, dict[str, pd.DataFrame]], models_of: dict[str, list[str]]) -> pd.DataFrame:
    """The ledger as a table: every registered claim on every model of its study (``models_of``:
    study -> model names, as in the workflow), rows in registry order then model order."""
    rows = []
    for c in load_claims().values():
        models = [m for m in models_of.get(c.study, []) if m in tables_by_model]
        if not models:
            continue
        if c.scope == "family":
            scoped = [("all models", {m: tables_by_model[m] for m in models})]
        else:
            scoped = [(m, tables_by_model[m]) for m in models]
        for label, tables in scoped:
            f = c.evaluate(tables)
            rows.append(dict(claim=c.id, model=label, source=c.source, text=c.text, statistic=f.statistic,
                             value=f.value, lo=f.lo, hi=f.hi, se=f.se, verdict=f.verdict, rule=c.rule,
                             detail=f.detail))
    return pd.DataFrame(rows, columns=COLUMNS)
