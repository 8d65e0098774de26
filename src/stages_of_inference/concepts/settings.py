"""The concepts config section: :class:`ConceptSettings` (``concepts``) and
:class:`SAESettings` (its ``sae`` block, ``concepts.sae``). Keys, defaults and allowed values
live in ``config/schema.yaml`` alone (:mod:`stages_of_inference.core.settings`). A module
of its own, so that the model run (``compute``) and the SAE trainer (``sae``) share settings
without importing each other (see core/digest.py).
"""
from __future__ import annotations

from typing import ClassVar

from ..core.settings import Settings

SAE_KINDS = ("topk", "relu")


class ConceptSettings(Settings):
    """``concepts``: stimuli, layer, window, selection and probes (its ``sae`` block is
    read by :class:`SAESettings`)."""

    section: ClassVar[str] = "concepts"


class SAESettings(Settings):
    """``concepts.sae``: the SAE's training tokens (corpus windows, read by the model run)
    and the SAE itself (``sae.sae_config`` turns these into an ``SAEConfig``)."""

    section: ClassVar[str] = "concepts.sae"
