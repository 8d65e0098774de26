"""The depth study (Figures 4-8, Table 2): per-layer statistics from one hooked pass
(``compute``), figures and Table 2 (``figures``), rule functions (``rules``, called by
``workflow/rules/depth.smk``)."""
