"""Outputs are readable by colleagues (umask, not mkstemp's 0600) and figures are
byte-reproducible (no creation date in the PDF)."""
import os
import stat
import time

import pandas as pd
import pytest

from stages_of_inference.core.io import write_json, write_parquet


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
    write_json({"a": 1}, tmp_path / "t.json")
    assert mode(tmp_path / "t.parquet") == expected
    assert mode(tmp_path / "t.json") == expected
    assert pd.read_parquet(tmp_path / "t.parquet").a.tolist() == [1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def summary_table():
    rows = []
    for model, n in (("a", 4), ("b", 3)):
        for kind in ("drop", "swap"):
            for layer in range(n - (kind == "swap")):
                row = {"model": model, "kind": kind, "layer": layer, "rel_depth": layer / (n - 1)}
                for metric in ("kl", "top1_agree", "entropy_change"):
                    row[f"{metric}_mean"] = 0.1 * (layer + 1) + (kind == "drop")
                    row[f"{metric}_se"] = 0.01
                rows.append(row)
    return pd.DataFrame(rows)


def test_figure_pdfs_are_byte_reproducible(tmp_path, umask, monkeypatch):
    from stages_of_inference.robustness.figures import plot_fig3

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    plot_fig3(summary_table(), tmp_path / "one.pdf")
    time.sleep(1.1)  # a creation date (seconds) would now differ
    plot_fig3(summary_table(), tmp_path / "two.pdf")
    one, two = (tmp_path / "one.pdf").read_bytes(), (tmp_path / "two.pdf").read_bytes()
    assert one[:5] == b"%PDF-" and b"/CreationDate" not in one
    assert one == two
    assert mode(tmp_path / "one.pdf") == 0o644


@pytest.mark.parametrize("kinds", [("drop",), ("swap",), ("drop", "swap")])
def test_fig3_draws_the_configured_kinds_only(tmp_path, kinds):
    """`interventions.kinds: [drop]` is valid config; Figure 3 then has one row."""
    from stages_of_inference.robustness.figures import plot_fig3

    table = summary_table()
    plot_fig3(table[table.kind.isin(kinds)], tmp_path / "fig3.pdf")
    assert (tmp_path / "fig3.pdf").read_bytes()[:5] == b"%PDF-"
