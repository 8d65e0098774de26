"""Layer edit plans: which blocks run, in which order, after an untouched prefix.

A :class:`Plan` is what ``Engine.run_from(plan.start, plan.order)`` runs: blocks
``0..start-1`` are the baseline's (their output is the cached residual entering block
``start``), then ``order`` (an int is a block; a tuple of blocks runs them in *parallel*:
each reads the same residual and their outputs are averaged). Three families:

* ``window`` (kind ``drop``): blocks ``l..l+n-1`` are skipped (Gromov et al. 2024, "The
  Unreasonable Ineffectiveness of the Deeper Layers"; n = 1 is the robustness study's drop);
* ``painters`` (Sun et al., "Transformer Layers as Painters"; ``gpt/routing_llama.py`` of
  floatingbigcat/transformer_layers_as_painters): with ``s`` the start layer, the middle
  blocks ``s+1..N-s-1`` are ``skip``-ped, replaced by the middle block ``N // 2`` run as many
  times (``middle_repeat``), run in reverse (``reverse``), in a seeded random order
  (``shuffle``: Python's ``random.seed(seed); random.shuffle(middle)``, as there) or all
  in parallel, ``loops`` times in a row (``parallel``; loops = 1 is their "parallel",
  loops > 1 their "looped parallel");
* ``repeat`` (the co-author fork's ``copy_layers_range.py``): a contiguous range of blocks,
  each block run ``copies + 1`` times in place (shared weights).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

FAMILIES = ("window", "painters", "repeat")
PAINTERS_KINDS = ("skip", "middle_repeat", "reverse", "shuffle", "parallel")
KINDS = ("drop", *PAINTERS_KINDS, "repeat")


@dataclass(frozen=True)
class Plan:
    """One layer edit. ``first..last`` (inclusive) is the edited range of blocks and
    ``width`` its size; ``params`` the family's parameters (``painters_start``, ``loops``,
    ``seed``, ``copies``)."""

    family: str
    kind: str
    start: int
    order: tuple
    first: int
    last: int
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def width(self) -> int:
        return self.last - self.first + 1

    @property
    def name(self) -> str:
        """A short unique label, e.g. ``window n=2 @5``, ``painters s=7 parallel R=3``,
        ``repeat 12-17 k=1``."""
        p = self.params
        if self.family == "window":
            return f"window n={self.width} @{self.first}"
        if self.family == "painters":
            extra = {"parallel": f" R={p.get('loops')}", "shuffle": f" seed={p.get('seed')}"}.get(self.kind, "")
            return f"painters s={p['painters_start']} {self.kind}{extra}"
        return f"repeat {self.first}-{self.last} k={p['copies']}"

    def full_order(self) -> list:
        """Every block the edited model runs, from block 0."""
        return list(range(self.start)) + list(self.order)

    def block_calls(self) -> int:
        """Block forward passes of the edited model (a parallel group counts each block)."""
        return sum(len(item) if isinstance(item, tuple) else 1 for item in self.full_order())


def describe(order: Sequence) -> str:
    """A compact text of a block order: runs of consecutive blocks as ``a-b``, a parallel
    group in brackets: ``0-8 [9-21] [9-21] 22-29``; ``-`` for no block."""
    parts: list[str] = []
    run: list[int] = []

    def flush():
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run.clear()

    for item in order:
        if isinstance(item, tuple):
            flush()
            parts.append("[" + describe(sorted(item)) + "]")
        elif run and item == run[-1] + 1:
            run.append(item)
        else:
            flush()
            run.append(item)
    flush()
    return " ".join(parts) if parts else "-"


def layer_at(rel: float, n_layers: int) -> int:
    """The block at relative depth ``rel`` (``round(rel * (N - 1))``, halves up)."""
    return int(rel * (n_layers - 1) + 0.5)


def windows(n_layers: int, widths: Iterable[int]) -> list[Plan]:
    """Drop ``n`` consecutive blocks at every start, for each width ``n <= N``."""
    plans = []
    for n in widths:
        for first in range(n_layers - n + 1):
            plans.append(Plan("window", "drop", first, tuple(range(first + n, n_layers)), first, first + n - 1))
    return plans


def painters(n_layers: int, starts: Iterable[float], kinds: Iterable[str], loops: Iterable[int],
             seed: int) -> list[Plan]:
    """The Painters variants for each start layer ``s = layer_at(start)``: the middle
    blocks ``s+1..N-s-1`` edited, blocks ``0..s`` and ``N-s..N-1`` as they are. A start
    whose middle is empty gives no plan."""
    plans = []
    for s in dict.fromkeys(layer_at(rel, n_layers) for rel in starts):
        middle = list(range(s + 1, n_layers - s))
        if not middle:
            continue
        tail = tuple(range(n_layers - s, n_layers))
        base = dict(painters_start=s)
        for kind in kinds:
            if kind == "skip":
                variants = [(tail, base)]
            elif kind == "middle_repeat":
                variants = [(tuple([n_layers // 2] * len(middle)) + tail, base)]
            elif kind == "reverse":
                variants = [(tuple(middle[::-1]) + tail, base)]
            elif kind == "shuffle":
                shuffled = list(middle)
                random.Random(seed).shuffle(shuffled)
                variants = [(tuple(shuffled) + tail, {**base, "seed": seed})]
            elif kind == "parallel":
                variants = [((tuple(middle),) * r + tail, {**base, "loops": r}) for r in loops]
            else:
                raise ValueError(f"Unknown Painters variant {kind!r}; use one of {', '.join(PAINTERS_KINDS)}.")
            plans += [Plan("painters", kind, s + 1, order, middle[0], middle[-1], params)
                      for order, params in variants]
    return plans


def repeats(n_layers: int, widths: Iterable[int], spans: Iterable[Sequence[float]],
            copies: Iterable[int]) -> list[Plan]:
    """Each block of a range run ``k + 1`` times in place: ranges of each width at every
    start, and the ranges ``spans`` (``[from, to]`` relative depths, inclusive)."""
    ranges = [(a, a + w - 1) for w in widths for a in range(n_layers - w + 1)]
    for lo, hi in spans:
        a, b = sorted((layer_at(lo, n_layers), layer_at(hi, n_layers)))
        ranges.append((a, b))
    plans = []
    for k in copies:
        for a, b in dict.fromkeys(ranges):
            order = tuple(j for j in range(a, b + 1) for _ in range(k + 1)) + tuple(range(b + 1, n_layers))
            plans.append(Plan("repeat", "repeat", a, order, a, b, {"copies": k}))
    return plans


def edit_plans(n_layers: int, settings, computed_widths: Iterable[int]) -> list[Plan]:
    """Every plan the ``edits`` settings ask for on an ``n_layers`` model: windows of the
    ``computed_widths`` (the widths not read from the robustness study), the Painters
    variants and the repeats; duplicates (the same family, kind and blocks) once."""
    plans = windows(n_layers, [n for n in computed_widths if n <= n_layers])
    plans += painters(n_layers, settings.painters_starts, settings.painters_kinds, settings.painters_loops,
                      settings.seed)
    plans += repeats(n_layers, [w for w in settings.repeat_widths if w <= n_layers], settings.repeat_spans,
                     settings.repeat_copies)
    return list(dict.fromkeys(plans))
