"""The concepts config section as dataclasses: :class:`ConceptSettings` (``concepts``) and
:class:`SAESettings` (its ``sae`` block, ``concepts.sae``).

The defaults live in ``config/schema.yaml``; the workflow fills them in. The dataclasses'
defaults equal the schema's (tests/concepts/test_settings.py), for code that builds
settings from a partial dict (tests, notebooks). A module of its own, so that the model
run (``compute``) and the SAE trainer (``sae``) share settings without importing each
other (see core/digest.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.settings import Settings

SAE_KINDS = ("topk", "relu")


@dataclass
class ConceptSettings(Settings):
    section: ClassVar[str] = "concepts"
    # the SAE's block (SAESettings); the stimulus folder (the rule's input files)
    shared_keys: ClassVar[frozenset[str]] = frozenset({"sae", "stimuli"})
    concepts: tuple = ("success", "danger")
    layer: int | None = None
    window: int = 16
    top_k: int = 8
    n_splits: int = 20
    test_fraction: float = 0.25
    C: float = 1.0
    seed: int = 0
    batch_size: int = 32

    def check(self) -> None:
        self.concepts = tuple(self.concepts)
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"concepts.test_fraction is {self.test_fraction}; use a value in (0, 1).")
        if self.n_splits < 2:
            raise ValueError(f"concepts.n_splits is {self.n_splits}; use at least 2 (intervals need repeats).")


@dataclass
class SAESettings(Settings):
    """``concepts.sae``: the SAE's training tokens (corpus windows, read by the model run)
    and the SAE itself (``sae.sae_config`` turns these into an ``SAEConfig``)."""

    section: ClassVar[str] = "concepts.sae"
    # training tokens
    n_sequences: int = 64
    seq_len: int = 128
    corpus_seed: int = 1
    batch_size: int = 8          # corpus windows per forward pass
    # the SAE and its optimisation
    expansion: int = 2
    kind: str = "topk"
    k: int = 32
    l1_coeff: float = 0.005
    aux_k: int = 64
    dead_tokens: int = 4096
    epochs: int = 8
    batch_size_tokens: int = 256  # tokens per optimisation step
    lr: float = 0.001
    outlier_norm: float = 10.0
    holdout_fraction: float = 0.1
    seed: int = 0

    def check(self) -> None:
        if self.kind not in SAE_KINDS:
            raise ValueError(f"concepts.sae.kind is {self.kind!r}; use one of {', '.join(SAE_KINDS)}.")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"concepts.sae.holdout_fraction is {self.holdout_fraction}; use a value in [0, 1).")
        if self.outlier_norm < 0:
            raise ValueError(f"concepts.sae.outlier_norm is {self.outlier_norm}; use 0 (keep all) or more.")
        if self.seq_len < 3:
            raise ValueError(f"concepts.sae.seq_len is {self.seq_len}; use at least 3.")
