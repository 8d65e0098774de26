"""The claims ledger's rule: which tables it reads, and the ledger as CSV, Markdown and HTML."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Sequence

from ..core.io import atomic_path, write_text

# The claim modules: imported here so that the rule's code digest follows them (ledger.py
# imports them by name, which the digest cannot see).
from . import paper, seeds  # noqa: F401
from .ledger import COLUMNS, build_ledger, load_claims

SHOWN = [("text", "Claim"), ("source", "Source"), ("model", "Model"), ("statistic", "Statistic"),
         ("value", "Value [95 % interval]"), ("verdict", "Verdict"), ("rule", "Rule"), ("detail", "Numbers")]


def claim_inputs(models_of: dict[str, list[str]]) -> list[str]:
    """Every table a registered claim needs, for every model of its study (the rule's input)."""
    paths = []
    for c in load_claims().values():
        for model in models_of.get(c.study, []):
            paths += [f"results/{model}/{table}" for table in c.tables]
    return sorted(set(paths))


def read_table(path):
    import pandas as pd

    path = Path(path)
    if path.suffix == ".json":
        return pd.DataFrame([json.loads(path.read_text())])
    return pd.read_parquet(path)


def tables_of(paths: Sequence[str]) -> dict[str, dict]:
    """``results/{model}/{table}`` files as ``{model: {table: DataFrame}}``."""
    out: dict[str, dict] = {}
    for p in paths:
        p = Path(p)
        out.setdefault(p.parent.name, {})[p.name] = read_table(p)
    return out


def fmt_value(row) -> str:
    def f(x):
        return f"{x:.3g}"

    if not math.isfinite(row["value"]):
        return "n/a"
    if math.isfinite(row["lo"]) and math.isfinite(row["hi"]):
        return f"{f(row['value'])} [{f(row['lo'])}, {f(row['hi'])}]"
    if math.isfinite(row["se"]):
        return f"{f(row['value'])} ± {f(row['se'])} (SE)"
    return f(row["value"])


def shown_rows(ledger) -> list[dict[str, str]]:
    """The ledger's rows as displayed: a claim's text and rule on its first row only."""
    rows, last = [], None
    for _, r in ledger.iterrows():
        first = r["claim"] != last
        last = r["claim"]
        cells = {key: str(r[key]) for key, _ in SHOWN}
        cells["value"] = fmt_value(r)
        cells["text"] = f"{r['text']} (`{r['claim']}`)" if first else ""
        for key in ("source", "rule"):
            cells[key] = cells[key] if first else ""
        rows.append(cells)
    return rows


def ledger_markdown(ledger) -> str:
    head = "| " + " | ".join(name for _, name in SHOWN) + " |\n|" + "---|" * len(SHOWN) + "\n"
    body = "".join("| " + " | ".join(r[key].replace("|", "\\|").replace("\n", " ") for key, _ in SHOWN) + " |\n"
                   for r in shown_rows(ledger))
    counts = ledger["verdict"].value_counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items()) or "no claim tested (no model in a claim's study)"
    return f"# Claims ledger\n\n{len(ledger)} rows: {summary}.\n\n" + head + body


def ledger_html(ledger) -> str:
    def cell(text):
        return html.escape(text).replace("`", "")

    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in SHOWN)
    body = "".join("<tr>" + "".join(f"<td>{cell(r[key])}</td>" for key, _ in SHOWN) + "</tr>\n"
                   for r in shown_rows(ledger))
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Claims ledger</title>"
            f"<style>{style}</style></head><body>\n<h1>Claims ledger</h1>\n<table>\n<tr>{head}</tr>\n{body}"
            f"</table>\n</body></html>\n")


def claims(tables: Sequence[str], models_of: dict[str, list[str]], out_csv: str, out_md: str, out_html: str) -> None:
    """The ledger of every registered claim on every model of its study."""
    ledger = build_ledger(tables_of(tables), models_of)
    assert list(ledger.columns) == COLUMNS
    with atomic_path(out_csv) as tmp:
        ledger.to_csv(tmp, index=False)
    write_text(ledger_markdown(ledger), out_md)
    write_text(ledger_html(ledger), out_html)
