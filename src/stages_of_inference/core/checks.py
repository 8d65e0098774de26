"""Configuration checks run when the DAG is built (Snakefile, workflow/rules/common.smk),
so a mistake fails in a second with one line naming the key, not minutes later inside a
job. Each check raises ``ConfigError`` with a one-line message."""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

_WARNED: set[str] = set()


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


def check_keys(config: Mapping[str, Any], schema: Mapping[str, Any], sources: Mapping[str, Any] | None = None) -> None:
    problems = unknown_keys(config, schema)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        path = problems[0].split("'")[1]
        raise ConfigError(problems[0].replace(" (", f" ({origin(path, sources)}; ", 1) + more)


def origin(path: str, sources: Mapping[str, Any] | None) -> str:
    """Which config source sets the key ``path`` (``a.b.c``): the last of ``sources`` (name
    -> parsed YAML, in the order snakemake merges them) that has it."""
    found = None
    for name, data in (sources or {}).items():
        if isinstance(data, Mapping) and _has_path(data, path):
            found = name
    return f"in {found}" if found else "from the schema's defaults"


def _has_path(data: Mapping[str, Any], path: str) -> bool:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def config_sources(workflow) -> dict[str, Any]:
    """The config sources snakemake merged, in order: config/config.yaml (unless a
    --configfile replaces it), each --configfile, then --config values."""
    from snakemake.common.configfile import load_configfile

    files = list(workflow.overwrite_configfiles or [])
    sources: dict[str, Any] = {}
    if not replaces_default_config(files):
        default = Path("config/config.yaml")
        sources["config/config.yaml"] = load_configfile("config/config.yaml") if default.exists() else {}
    for path in files:
        sources[str(path)] = load_configfile(path)
    cli = getattr(workflow.config_settings, "config", None)
    if cli:
        sources["--config"] = dict(cli)
    return sources


def check_schema(config: Mapping[str, Any], schema: Mapping[str, Any],
                 sources: Mapping[str, Any] | None = None) -> None:
    """JSON-schema validation with one line naming the key, its source and what is allowed
    (snakemake's own validation prints the whole schema)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(config)))
    if error is None:
        return
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "enum":
        allowed = f"use one of {', '.join(map(str, error.validator_value))}"
    elif error.validator == "pattern":
        allowed = f"it must match {error.validator_value}"
    elif error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        allowed = f"{error.validator} is {error.validator_value}"
    elif error.validator == "type":
        allowed = f"use a value of type {error.validator_value}"
    else:
        allowed = error.message
    where = origin(path, sources) if path != "(top level)" else "in the config"
    value = error.instance if not isinstance(error.instance, Mapping) else "{...}"
    raise ConfigError(f"config key {path!r} is {value!r} ({where}); {allowed}.")


def warn_once(message: str) -> None:
    """A `Config warning:` line on stderr, once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"Config warning: {message}", file=sys.stderr)


def check_device(device: str, workflow=None) -> None:
    """``runtime.device: cuda`` on a machine that runs its jobs here and has no NVIDIA
    driver fails now, not in every job (a cluster's submit host may lack the GPU its jobs
    get, so jobs sent elsewhere are not checked)."""
    from .models import nvidia_driver_present

    local = workflow is None or (workflow.local_exec and not workflow.remote_exec)
    if device.startswith("cuda") and local and not nvidia_driver_present():
        raise ConfigError(f"runtime.device is {device!r} but this machine has no NVIDIA driver; "
                          f"use `auto` or `cpu`.")


def check_against_shapes(config: Mapping[str, Any], shapes: Mapping[str, Any],
                         sources: Mapping[str, Any] | None = None) -> None:
    """Values that the configured models' shapes make impossible, before any job runs
    (each message names the key and the file that sets it)."""
    try:
        _check_against_shapes(config, shapes)
    except ConfigError as exc:
        key = str(exc).split(" ", 1)[0]
        if "." in key and not key.startswith("model"):
            raise ConfigError(f"{exc} ({origin(key, sources)})") from None
        raise


def _check_against_shapes(config: Mapping[str, Any], shapes: Mapping[str, Any]) -> None:
    corpus = config.get("corpus", {})
    check_seq_len(corpus.get("seq_len", 0), {name: s.max_positions for name, s in shapes.items()})
    kinds = config.get("interventions", {}).get("kinds", [])
    for name, shape in shapes.items():
        if "swap" in kinds and shape.n_layers < 2:
            raise ConfigError(f"model {name!r} has {shape.n_layers} block; interventions.kinds has swap, which "
                              f"needs 2. Drop swap or give the model more layers.")
        if shape.n_layers < 2:
            raise ConfigError(f"model {name!r} has {shape.n_layers} block; the depth figures need at least 2 "
                              f"(num_hidden_layers).")
    concepts = config.get("concepts", {})
    layer = concepts.get("layer")
    for name, shape in shapes.items():
        if layer is not None and not 0 <= layer < shape.n_layers:
            raise ConfigError(f"concepts.layer is {layer} but model {name!r} has blocks 0..{shape.n_layers - 1}; "
                              f"use a block in range (or null for the middle one).")
        sae = concepts.get("sae", {})
        d_sae = sae.get("expansion", 1) * shape.d_model
        if sae.get("kind", "topk") == "topk" and sae.get("k", 0) > d_sae:
            raise ConfigError(f"concepts.sae.k is {sae['k']} but model {name!r}'s SAE has d_sae = "
                              f"{sae.get('expansion')} x {shape.d_model} = {d_sae} features; use k <= {d_sae}.")
        if sae.get("aux_k", 0) > d_sae:
            raise ConfigError(f"concepts.sae.aux_k is {sae['aux_k']} but model {name!r}'s SAE has {d_sae} "
                              f"features; use aux_k <= {d_sae}.")
    cases = config.get("casestudies", {})
    for key, extra in (("subjoiner", cases.get("subjoiner", {}).get("max_subtokens", 4)), ("ing", 0)):
        context = cases.get(key, {}).get("context_tokens")
        if context is None:
            continue
        for name, shape in shapes.items():
            if shape.max_positions is not None and 1 + context + extra > shape.max_positions:
                raise ConfigError(f"casestudies.{key}.context_tokens is {context}; prompts of {1 + context + extra} "
                                  f"tokens exceed model {name!r}'s {shape.max_positions} positions; use at most "
                                  f"{shape.max_positions - 1 - extra}.")
    self_repair = config.get("self_repair", {})
    for name, shape in shapes.items():
        if self_repair.get("ablation") == "resample" and min(self_repair.get("batch_size", 2),
                                                               self_repair.get("n_sequences", 2)) < 2:
            raise ConfigError("self_repair.ablation is resample, which patches from another sequence; "
                              "self_repair.n_sequences and batch_size must be at least 2.")


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
    """A file corpus must exist, have a known suffix, decode as UTF-8 text (a .jsonl file:
    every line a JSON object) and hold some text."""
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
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"corpus.source {source!r} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r}); point it at a text file.") from None
    if "\x00" in text:
        raise ConfigError(f"corpus.source {source!r} holds NUL bytes: a binary file, not text.")
    has_text = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            has_text = True
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"corpus.source {source!r}, line {lineno}, is not JSON ({exc.msg} at column "
                              f"{exc.colno}); use one JSON object per line.") from None
        if not isinstance(row, Mapping):
            raise ConfigError(f"corpus.source {source!r}, line {lineno}, is a JSON {type(row).__name__}, not an "
                              f"object with a {field!r} field.")
        if str(row.get(field) or "").strip():
            has_text = True
    if has_text:
        return
    what = f"no line with text under corpus.text_field {field!r}" if path.suffix == ".jsonl" else "no text"
    raise ConfigError(f"corpus.source {source!r} is empty ({what}); point it at a file with text.")
