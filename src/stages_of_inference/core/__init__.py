"""The shared core every study uses: model loading (``models``), corpus sampling
(``corpus``), atomic I/O (``io``), per-token metrics (``metrics``), the engine that runs a
model from cached residuals with block edits and ablation hooks (``engine``), neuron
weights analysis (``neurons``), plotting helpers (``plotting``) and the shared rules
(``rules``: prepare a model, tokenize the corpus)."""
