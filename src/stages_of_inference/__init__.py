"""Stages of inference: layer drop/swap interventions and per-depth analyses.

Reproduces Lad, Gurnee & Tegmark, "The Remarkable Robustness of LLMs: Stages of
Inference?" (arXiv 2406.19384) on models loaded through TransformerLens 4's
``TransformerBridge``.
"""

__version__ = "0.1.0"
