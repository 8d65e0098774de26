"""A config section as an object, its keys, defaults and constraints read from
``config/schema.yaml`` alone (``corpus``, ``casestudies.subjoiner``, ``casestudies.ing``,
``seqcont``, ``concepts``, ``concepts.sae``, ...).

``Cls.from_config(entry)`` (or ``Cls(**entry)``) fills every key the entry leaves out with
the schema's default, names an unknown key with the nearest valid one, validates the values
against the schema (one line naming the key, the value and what is allowed), then runs the
subclass's ``check()`` for constraints between keys that a JSON schema cannot state. The
workflow validates the whole config when the DAG is built; this is the same guard for code
that builds settings from a dict (tests, notebooks, other studies). A subclass declares its
section and, if needed, ``check``; it never restates a key or a default::

    class MySettings(Settings):
        section: ClassVar[str] = "my_study"

        def check(self):
            if self.low > self.high:
                raise ValueError(f"my_study.low is {self.low}; use at most my_study.high ({self.high}).")
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, ClassVar, Mapping

from .checks import _nearest

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


@functools.lru_cache(maxsize=None)
def load_schema() -> dict:
    import yaml

    if not SCHEMA_PATH.exists():
        raise FileNotFoundError(f"{SCHEMA_PATH} is missing: the package reads its config schema from the "
                                f"workflow's config/ folder (run from a checkout of the workflow).")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def section_schema(section: str) -> dict:
    """The JSON schema of ``section`` (``a.b``: a nested section)."""
    node = load_schema()
    for part in section.split("."):
        node = node["properties"][part]
    return node


def section_defaults(section: str) -> dict:
    """The schema's default of every key of ``section`` that has one."""
    props = section_schema(section).get("properties", {})
    return {key: copy.deepcopy(prop["default"]) for key, prop in props.items() if "default" in prop}


def _schema_error(section: str, values: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(dict(values)))
    if error is None:
        return None
    path = ".".join([section, *(str(p) for p in error.absolute_path)])
    if error.validator == "enum":
        allowed = f"use one of {', '.join(map(str, error.validator_value))}"
    elif error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems"):
        allowed = f"{error.validator} is {error.validator_value}"
    else:
        allowed = error.message
    return f"{path} is {error.instance!r}; {allowed}."


class Settings:
    section: ClassVar[str] = ""

    def __init__(self, **entry):
        schema = section_schema(self.section)
        props = schema.get("properties", {})
        for key in entry:
            if key not in props:
                raise ValueError(f"{self.section}: unknown key {key!r}; {_nearest(key, props)}")
        values = {**section_defaults(self.section), **copy.deepcopy(entry)}
        problem = _schema_error(self.section, values, schema)
        if problem:
            raise ValueError(problem)
        self.__dict__.update(values)
        self.check()

    @classmethod
    def from_config(cls, entry: Mapping[str, Any] | None = None):
        return cls(**dict(entry or {}))

    def check(self) -> None:
        """Raise ValueError naming a bad combination of values (subclasses)."""

    def to_dict(self) -> dict:
        return copy.deepcopy(self.__dict__)

    def replace(self, **changes):
        return type(self)(**{**self.__dict__, **changes})

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"
