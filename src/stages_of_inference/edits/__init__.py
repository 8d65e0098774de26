"""The layer-edits study (after Lad, Gurnee & Tegmark 2025 and the layer-pruning work that
followed): CKA between the residual streams after every pair of blocks (``cka``), edit
plans beyond drop and swap (``plans``: windows of n dropped blocks, the "Transformer Layers
as Painters" variants, repeated ranges) run from the cached residual with Figure 3's
per-token metrics (``compute``), cheap predictors of which blocks can be dropped against
the measured drops (``predictors``), ``figures`` and ``rules`` (what
``workflow/rules/edits.smk`` calls). ``settings``: the ``edits`` config section."""
