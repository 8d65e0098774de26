"""Small I/O helpers: atomic writes and logging set-up for workflow scripts."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set and restore
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    A job killed half-way leaves no truncated output behind, so a resumed run
    recomputes it instead of trusting it. The file gets the permissions a plain
    ``open(path, "w")`` would give (0666 minus the umask: 0644 usually), not
    ``mkstemp``'s 0600, so colleagues on a shared filesystem can read the results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_tables(paths, **read_parquet) -> "pd.DataFrame":  # noqa: F821
    """The parquet files ``paths`` as one table (e.g. one per model). Empty tables are
    skipped; when all are empty the first is returned, so its columns survive.
    ``read_parquet``: options of ``pandas.read_parquet`` (e.g. ``filters=``, ``columns=``)."""
    import pandas as pd

    frames = [pd.read_parquet(p, **read_parquet) for p in paths]
    if not frames:
        return pd.DataFrame()
    full = [f for f in frames if len(f)]
    return pd.concat(full, ignore_index=True) if full else frames[0]


def write_parquet(df, path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def setup_logging(log_path: str | None = None, level=logging.INFO) -> logging.Logger:
    """Send the package's log records to ``log_path`` (a Snakemake ``log:``) and stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return logging.getLogger("stages_of_inference")
