"""A study's config section as a dataclass (``casestudies.subjoiner``, ``casestudies.ing``,
``seqcont``, ``concepts``): one ``from_config`` for all of them.

``from_config(entry)`` builds the dataclass from the section's dict (``None``: all
defaults), names an unknown key with the nearest valid one, then runs the subclass's
``check()``, which raises ``ValueError`` naming the bad value and the fix. The schema
(``config/schema.yaml``) already rejects unknown keys when the DAG is built; this is the
same guard for code that builds settings from a dict (tests, notebooks, other studies).

    @dataclass
    class MySpec(Settings):
        section: ClassVar[str] = "my_study"
        n_prompts: int = 10

        def check(self):
            if self.n_prompts < 1:
                raise ValueError(f"my_study.n_prompts is {self.n_prompts}; use at least 1.")
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

from .checks import _nearest


@dataclass
class Settings:
    section: ClassVar[str] = ""
    # keys of the section that other code reads (e.g. a nested ``sae:`` block): skipped here
    shared_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_config(cls, entry: Mapping[str, Any] | None):
        entry = {k: v for k, v in dict(entry or {}).items() if k not in cls.shared_keys}
        valid = [f.name for f in fields(cls)]
        for key in entry:
            if key not in valid:
                raise ValueError(f"{cls.section}: unknown key {key!r}; {_nearest(key, valid)}")
        spec = cls(**entry)
        spec.check()
        return spec

    def check(self) -> None:
        """Raise ValueError for a bad value (subclasses); the defaults must pass."""

    def to_dict(self) -> dict:
        return asdict(self)
