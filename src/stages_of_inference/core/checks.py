"""Configuration checks run when the DAG is built (Snakefile, workflow/rules/common.smk),
so a mistake fails in a second with one line naming the key, not minutes later inside a
job. Each check raises ``ConfigError`` with a one-line message."""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

class ConfigError(ValueError):
    """A configuration mistake, explained in one line."""


def config_check(check, *args):
    """Run ``check(*args)`` while snakemake builds the DAG; a ConfigError ends the run
    with its one line (exit status 1) instead of a traceback."""
    try:
        return check(*args)
    except ConfigError as exc:
        sys.exit(f"Config error: {exc}")


def _nearest(key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys: {', '.join(valid)}."


def unknown_keys(config: Mapping[str, Any], schema: Mapping[str, Any], where: str = "") -> list[str]:
    """One message per key the schema does not allow (``additionalProperties: false``),
    at every level, with the nearest valid key. The valid keys are the schema's
    ``properties``, so a study that adds its top-level key to the schema is known here."""
    problems = []
    if not isinstance(config, Mapping):
        return problems
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in config.items():
        path = f"{where}.{key}" if where else str(key)
        if key in properties:
            problems += unknown_keys(value, properties[key], path)
        elif extra is False:
            place = f"under {where!r}" if where else "at the top level"
            problems.append(f"unknown config key {path!r} ({place}); {_nearest(str(key), properties)}")
        elif isinstance(extra, Mapping):
            problems += unknown_keys(value, extra, path)
    return problems


def check_keys(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    problems = unknown_keys(config, schema)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def is_whole_config(data: Any) -> bool:
    """A config file that lists ``models`` is a whole configuration (config/test.yaml,
    config/paper.yaml); one without is an overlay (config/cluster.yaml)."""
    return isinstance(data, Mapping) and isinstance(data.get("models"), Mapping)


def replaces_default_config(cli_configfiles: Iterable[str] | None, load=None) -> bool:
    """Whether the ``--configfile`` files replace config/config.yaml instead of extending
    it: snakemake merges dictionaries key by key, so a whole configuration merged into
    the default would also run the default's models (the tiny test run would run
    SmolLM2 too). The Snakefile then drops config/config.yaml, as
    ``--replace-workflow-config`` does; unlike that flag this also holds in cluster jobs,
    which snakemake starts without it."""
    if not cli_configfiles:
        return False
    if load is None:
        from snakemake.common.configfile import load_configfile as load
    return any(is_whole_config(load(path)) for path in cli_configfiles)


def check_seq_len(seq_len: int, max_positions: Mapping[str, int | None]) -> None:
    """Every sequence must fit the model's position table (learned position embeddings
    otherwise fail with an opaque IndexError inside a job)."""
    for model, limit in max_positions.items():
        if limit is not None and seq_len > limit:
            raise ConfigError(
                f"corpus.seq_len is {seq_len} but model {model!r} takes at most {limit} positions "
                f"(its max_position_embeddings); set corpus.seq_len <= {limit}."
            )


def subset_warnings(corpus: Mapping[str, Any], section: str, settings: Mapping[str, Any] | None) -> list[str]:
    """A study that reads at most the first ``n_sequences`` x ``seq_len`` corpus tokens
    (``self_repair``) and asks for more than the corpus has uses only what there is; say
    so when the DAG is built (one line per key), so that an overlay meant for a larger
    corpus does not run on a smaller one unnoticed."""
    out = []
    for key in ("n_sequences", "seq_len"):
        want, have = (settings or {}).get(key), corpus.get(key)
        if want is not None and have is not None and int(want) > int(have):
            out.append(f"{section}.{key} is {want} but corpus.{key} is {have}: {section} uses the {have} there "
                       f"are (raise corpus.{key} for more, e.g. config/full.yaml: 16 x 128).")
    return out


def check_corpus_source(corpus: Mapping[str, Any]) -> None:
    """A file corpus must exist, have a known suffix and hold some text (without reading
    more of it than needed)."""
    source = str(corpus.get("source", "embedded"))
    if source == "embedded" or source.startswith("hf:"):
        return
    path = Path(source)
    if not path.exists():
        raise ConfigError(
            f"corpus.source {source!r}: no such file (relative paths start in the working "
            f"directory, {Path.cwd()}); use `embedded`, `hf:<dataset>` or a .txt/.jsonl file."
        )
    if not path.is_file() or path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"corpus.source {source!r}: use a .txt or .jsonl file.")
    field = corpus.get("text_field", "text")
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            if path.suffix == ".txt":
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"corpus.source {source!r}: a line is not JSON ({exc}).") from None
            if isinstance(row, Mapping) and str(row.get(field) or "").strip():
                return
    what = f"no line with text under corpus.text_field {field!r}" if path.suffix == ".jsonl" else "no text"
    raise ConfigError(f"corpus.source {source!r} is empty ({what}); point it at a file with text.")
