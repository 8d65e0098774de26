import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy

import pytest
import torch

# Marked `slow` here, so that `pytest -m "not slow"` (make test-fast) leaves them out: the
# tests that use these fixtures (a real snakemake run of every target; the embedded
# SmolLM2's tokenizer, converted from its GGUF), and the cases of a test parametrized over
# the tiny architectures other than Llama (SmolLM2's): the fast loop checks each behaviour
# on one architecture, `make test` on all four (tests written for Gemma 3 alone stay in the
# fast loop). Other slow tests carry @pytest.mark.slow themselves.
SLOW_FIXTURES = {"tiny_run", "smol_tokenizer"}
SLOW_ARCHS = {"gpt2", "gpt_neox", "gemma3_text"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or any(isinstance(v, str) and v in SLOW_ARCHS for v in params.values())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smol_tokenizer():
    from stages_of_inference.core.models import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture(scope="session")
def bpe_tokenizer():
    from stages_of_inference.core.corpus import train_bytelevel_bpe

    return train_bytelevel_bpe(512)


TINY = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    "gpt2": dict(n_embd=64, n_layer=4, n_head=4, n_positions=256),
    "gpt_neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=256),
    # Gemma 3: sliding-window and full-attention layers (window 4 < the test sequences, so
    # the two kinds differ), 4 query heads sharing 1 key/value head, sandwich norms with
    # offset (1 + w) RMSNorm weights, RoPE bases 10k (sliding) and 1M (full).
    "gemma3_text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                        max_position_embeddings=256, architectures=["Gemma3ForCausalLM"]),
}


def tiny_hf_model(arch, tokenizer, seed=0):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **TINY[arch])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    # random init has near-zero residual writes; scale up so interventions matter
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(3.0)
        for name, p in model.named_parameters():  # Gemma's offset norm weights: not all 1 + 0
            if p.dim() == 1 and "norm" in name and arch.startswith("gemma"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + p.numel())) * 0.3)
    return model


@pytest.fixture(scope="session", params=sorted(TINY))
def tiny_pair(request, bpe_tokenizer):
    """(independent HF model, bridge over a copy of it, arch)."""
    from stages_of_inference.core.models import bridge_from_hf_model

    hf = tiny_hf_model(request.param, bpe_tokenizer)
    bridge = bridge_from_hf_model(copy.deepcopy(hf), bpe_tokenizer, name=f"tiny-{request.param}")
    return hf, bridge, request.param


def project_copy(dest):
    """A copy of the repository's tracked (and untracked, not ignored) files at ``dest``:
    a project a user cloned, to run snakemake in without touching this checkout."""
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.split()
    dest = Path(dest)
    for name in files:
        src = repo / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def run_snakemake(project, *args, timeout=2400, check=True):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One real snakemake run of every target (`all`) on config/test.yaml (three tiny
    random-weight models) in a copy of the project, shared by every workflow test:
    tests/test_workflow.py, tests/test_rules.py and each study's own workflow test."""
    project = project_copy(tmp_path_factory.mktemp("project"))
    proc = run_snakemake(project, "--configfile", "config/test.yaml", "--cores", "2", "all")
    (project / "snakemake.stderr").write_text(proc.stderr)
    return project
