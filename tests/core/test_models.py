"""Model specs: clear errors, offline behaviour, random-weight models."""
import time

import pytest

from stages_of_inference.core.models import ModelSpec, ModelUnavailableError, n_layers, prepare_model


def test_missing_hub_model_fails_fast_and_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = ModelSpec.from_config("gpt2-xl", {"source": "hf", "hf_name": "openai-community/gpt2-xl"})
    start = time.time()
    with pytest.raises(ModelUnavailableError) as err:
        n_layers(spec)
    assert time.time() - start < 10
    msg = str(err.value)
    assert "openai-community/gpt2-xl" in msg and "hf download" in msg and "HF_HUB_OFFLINE" in msg


def test_missing_hub_model_in_dry_run_is_reported(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  nope: {source: hf, hf_name: someone/not-cached-model}\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "all", "-n", "--cores", "1", "--configfile", str(cfg)],
                          cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode != 0
    assert "someone/not-cached-model" in proc.stdout + proc.stderr


def test_bad_specs_name_the_problem():
    with pytest.raises(ValueError, match="models.x.source"):
        ModelSpec.from_config("x", {"source": "ftp"})
    with pytest.raises(ValueError, match="needs `arch`"):
        ModelSpec.from_config("x", {"source": "random"})


def test_random_model_is_seeded_and_prepared(tmp_path):
    import json

    import torch
    from transformers import AutoModelForCausalLM

    entry = {"source": "random", "arch": "gpt2", "tokenizer": "bpe:512", "seed": 3,
             "config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}}
    spec = ModelSpec.from_config("r", entry)
    assert n_layers(spec) == 2
    a = json.loads(json.dumps(prepare_model(spec, tmp_path / "a")))
    b = prepare_model(spec, tmp_path / "b")
    ma = AutoModelForCausalLM.from_pretrained(a["path"])
    mb = AutoModelForCausalLM.from_pretrained(b["path"])
    for (na, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(pa, pb), na
    assert ma.config.vocab_size == 512
