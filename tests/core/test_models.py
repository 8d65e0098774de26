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


@pytest.mark.slow  # snakemake -n
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
    import torch
    from transformers import AutoModelForCausalLM

    entry = {"source": "random", "arch": "gpt2", "tokenizer": "bpe:512", "seed": 3,
             "config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}}
    spec = ModelSpec.from_config("r", entry)
    assert n_layers(spec) == 2
    from stages_of_inference.core.models import read_manifest

    prepare_model(spec, tmp_path / "a")
    prepare_model(spec, tmp_path / "b")
    ma = AutoModelForCausalLM.from_pretrained(read_manifest(tmp_path / "a" / "manifest.json")["path"])
    mb = AutoModelForCausalLM.from_pretrained(read_manifest(tmp_path / "b" / "manifest.json")["path"])
    for (na, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(pa, pb), na
    assert ma.config.vocab_size == 512


def test_prepared_model_survives_a_move_and_keeps_the_umask(tmp_path, monkeypatch):
    """The manifest names its weights relative to itself (a moved or copied project still
    loads them), and written files get 0666 minus the umask, not 0600."""
    import os
    import shutil

    from stages_of_inference.core.models import load_hf_model, read_manifest

    entry = {"source": "random", "arch": "gpt2", "tokenizer": "bpe:512",
             "config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}}
    old = os.umask(0o022)
    try:
        prepare_model(ModelSpec.from_config("r", entry), tmp_path / "a" / "r")
    finally:
        os.umask(old)
    weights = tmp_path / "a" / "r" / "weights"
    modes = {p.name: p.stat().st_mode & 0o777 for p in weights.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    shutil.move(tmp_path / "a", tmp_path / "b")
    manifest = tmp_path / "b" / "r" / "manifest.json"
    assert "/" not in json_path(manifest)  # relative
    assert read_manifest(manifest)["path"] == str(tmp_path / "b" / "r" / "weights")
    assert load_hf_model(manifest, device="cpu").config.n_layer == 2


def json_path(manifest):
    import json

    return json.loads(manifest.read_text())["path"]


def test_nothing_is_cached_outside_the_results(tmp_path, monkeypatch):
    """Building a random model's BPE tokenizer writes nothing under the user's home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    (tmp_path / "home").mkdir()
    entry = {"source": "random", "arch": "gpt2", "tokenizer": "bpe:300",
             "config": {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64}}
    prepare_model(ModelSpec.from_config("r", entry), tmp_path / "out")
    assert not any((tmp_path / "home").rglob("*")), list((tmp_path / "home").rglob("*"))
    assert (tmp_path / "out" / "weights" / "tokenizer.json").exists()


def test_online_message_does_not_claim_downloads_are_off(monkeypatch, tmp_path):
    from stages_of_inference.core.models import _hub_unavailable

    spec = ModelSpec.from_config("g", {"source": "hf", "hf_name": "someone/model"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "downloads are off" not in str(_hub_unavailable(spec))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "downloads are off" in str(_hub_unavailable(spec))


@pytest.mark.slow  # one of the longest: `make test` runs it
def test_importing_the_package_changes_no_global_state():
    import subprocess
    import sys

    code = ("import os, matplotlib; before = dict(os.environ); "
            "import stages_of_inference.core.models, stages_of_inference.core.plotting, "
            "stages_of_inference.robustness.figures, stages_of_inference.depth.figures, "
            "stages_of_inference.casestudies.figures, stages_of_inference.self_repair.figures, "
            "stages_of_inference.seqcont.figures, stages_of_inference.concepts.figures; "
            "assert dict(os.environ) == before, set(os.environ) ^ set(before); "
            "assert matplotlib.rcParams._get_backend_or_none() is None, 'a module chose a matplotlib backend'")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "MPLBACKEND")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
