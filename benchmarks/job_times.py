"""Job seconds of a workflow run, per rule and model, as a Markdown table.

    python benchmarks/job_times.py                     # results/benchmarks of this checkout
    python benchmarks/job_times.py path/to/results/benchmarks --column cpu_time

Every rule writes ``results/benchmarks/<rule>/{model}.tsv`` (per-model rules; the
intervention chunks under ``<rule>/{model}/{kind}/{chunk}.tsv``) or
``results/benchmarks/<rule>.tsv`` (figures and tables), Snakemake's ``benchmark:`` files.
This sums the chosen column (``s``: wall seconds of the job, the default) over a rule's
jobs of each model and prints one row per rule, one column per model, then the totals.
Rules without a model (figures, tables) go in the column ``(all)``. Measures nothing
itself: it reads what the run recorded.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

ALL = "(all)"


def read_value(path: Path, column: str) -> float:
    """The ``column`` of a benchmark file's first data row (one row per repeat; the first)."""
    with path.open() as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return float(row[column])


def job_times(root: Path, column: str = "s") -> dict[str, dict[str, float]]:
    """``{rule: {model or ALL: summed column}}`` from the benchmark files under ``root``."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted(root.rglob("*.tsv")):
        parts = path.relative_to(root).parts
        rule = parts[0].removesuffix(".tsv")
        model = ALL if len(parts) == 1 else (path.stem if len(parts) == 2 else parts[1])
        table[rule][model] += read_value(path, column)
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    models = sorted({m for row in table.values() for m in row if m != ALL})
    cols = models + ([ALL] if any(ALL in row for row in table.values()) else [])
    lines = ["| rule | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    totals = defaultdict(float)
    for rule in sorted(table, key=lambda r: -sum(table[r].values())):
        cells = []
        for col in cols:
            value = table[rule].get(col)
            totals[col] += value or 0.0
            cells.append("" if value is None else f"{value:.0f}")
        lines.append(f"| `{rule}` | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{totals[c]:.0f}**" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="results/benchmarks")
    p.add_argument("--column", default="s", help="benchmark column: s (wall), cpu_time, max_rss, ...")
    args = p.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder of benchmark files (run the workflow first).")
    print(markdown(job_times(root, args.column)))


if __name__ == "__main__":
    main()
