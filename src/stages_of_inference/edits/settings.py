"""The ``edits`` config section: :class:`EditSettings`. Keys, defaults and allowed values
live in ``config/schema.yaml`` alone (:mod:`stages_of_inference.core.settings`)."""
from __future__ import annotations

from typing import ClassVar

from ..core.settings import Settings


class EditSettings(Settings):
    """``edits``: the tokens, the edit plans (windows, Painters variants, repeats)."""

    section: ClassVar[str] = "edits"

    def check(self) -> None:
        for lo, hi in self.repeat_spans:
            if lo > hi:
                raise ValueError(f"edits.repeat_spans has [{lo}, {hi}]; use [from, to] with from <= to.")
