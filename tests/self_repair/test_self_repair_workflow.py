"""The self-repair targets built by a real snakemake run on the tiny config, and one
head's numbers recomputed with plain transformers on the workflow's own weights/tokens."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from test_self_repair_compute import HandRun, hand_readout, picked_logit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_self_repair(tiny_run):
    return tiny_run  # the shared run of `all` on the tiny config (tests/conftest.py)


def test_tiny_workflow_builds_self_repair_targets(tiny_self_repair):
    work = tiny_self_repair
    for name in ("self_repair", "self_repair_tokens"):
        pdf = work / f"figures/{name}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000, pdf
    for model, n_layers in (("tiny-llama", 4), ("tiny-gpt2", 3), ("tiny-neox", 3)):
        heads = pd.read_parquet(work / f"results/{model}/self_repair.parquet")
        assert len(heads) == n_layers * 4 and set(heads["model"]) == {model}
        tokens = pd.read_parquet(work / f"results/{model}/self_repair_tokens.parquet")
        assert len(tokens) == n_layers * 4 * 4 * 15  # heads x 4 sequences x positions 0..14 (the study's)
        neurons = pd.read_parquet(work / f"results/{model}/self_repair_neurons.parquet")
        assert len(neurons) == n_layers * 4 * 3
        assert (work / f"results/benchmarks/self_repair/{model}.tsv").exists()
        assert (work / f"logs/self_repair/{model}.log").exists()


@torch.no_grad()
def test_tiny_workflow_total_effect_matches_plain_transformers(tiny_self_repair):
    """The study's definition (the defaults): one head's z resampled from the next corpus
    sequence's own forward pass, the true next token's centred logit, positions 0..T-2."""
    from transformers import AutoModelForCausalLM

    from stages_of_inference.core.models import read_manifest

    work = tiny_self_repair
    manifest = read_manifest(work / "results/models/tiny-llama/manifest.json")  # path: the weights folder
    model = AutoModelForCausalLM.from_pretrained(manifest["path"], attn_implementation="eager").eval()
    tokens = torch.load(work / "results/tiny-llama/corpus.pt")[:4, :16]
    df = pd.read_parquet(work / "results/tiny-llama/self_repair_tokens.parquet")
    heads = pd.read_parquet(work / "results/tiny-llama/self_repair.parquet")
    assert set(heads["ablation"]) == {"resample"} and set(heads["target"]) == {"next"}
    layer, head, dh = 2, 3, 16
    clean = HandRun(model, "llama", tokens)
    source = HandRun(model, "llama", tokens.roll(-1, 0))  # sequence j takes sequence j + 1 (mod 4)
    sl = slice(head * dh, (head + 1) * dh)

    def edit(x):
        x[..., sl] = source.o_in[layer][..., sl]
        return x

    abl = HandRun(model, "llama", tokens, edit=(layer, edit))
    pos = slice(0, 15)
    targets = tokens[:, 1:16]
    te = picked_logit(clean.logits[:, pos], targets, True) - picked_logit(abl.logits[:, pos], targets, True)
    u, s = hand_readout(model, "llama", clean.final[:, pos], targets, centre=True)
    w = model.model.layers[layer].self_attn.o_proj.weight[:, sl]
    de = (((clean.o_in[layer][..., sl] - source.o_in[layer][..., sl]) @ w.T)[:, pos] * u).sum(-1) / s
    got = df[(df["layer"] == layer) & (df["head"] == head)].sort_values(["seq", "pos"])
    np.testing.assert_array_equal(got["target"].to_numpy(), targets.flatten().numpy())
    np.testing.assert_allclose(got["te"].to_numpy(), te.flatten().numpy(), atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(got["de"].to_numpy(), de.flatten().numpy(), atol=2e-4, rtol=1e-3)
    assert np.abs(got["de"].to_numpy()).max() > 1e-3  # the check can fail
