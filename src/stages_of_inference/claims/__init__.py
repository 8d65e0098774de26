"""The claims ledger: each claim of the paper (v1 2024, NeurIPS 2025) and of the seed studies,
tested per model on the run's own result tables (see :mod:`.ledger`)."""
