"""Real snakemake run of the concept-features targets on the tiny config (random-weight
models), checked against plain transformers and against the tables' own raw rows."""
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("figures/sae_training.pdf", "figures/concept_methods.pdf")


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run  # the shared run of `all` on the tiny config (tests/conftest.py)


def test_targets_and_tables(run):
    for target in TARGETS:
        pdf = run / target
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000, pdf
    models = ("tiny-llama", "tiny-gpt2", "tiny-neox")
    for model in models:
        res = run / "results" / model
        quality = pd.read_parquet(res / "concept_sae.parquet").iloc[0]
        assert 0 <= quality["dead_features"] <= quality["d_sae"] and quality["val_l0"] <= quality["k"]
        probes = pd.read_parquet(res / "concept_probes.parquet")
        combos = probes.groupby(["concept", "space", "method"]).size()
        assert len(combos) == 2 * 2 * 3 and (combos == 3).all()  # 2 concepts x 2 spaces x 3 methods, 3 splits
        assert (probes["features"].map(len) == probes["k"]).all() and (probes["k"] <= 8).all()
        assert (probes.loc[probes.method == "maxact", "k"] == 8).all()
        # the RSA rule refuses SAE features only (raw dimensions always have every pair)
        assert (probes.loc[(probes.method == "maxact") | (probes.space == "raw"), "refused"] == 0).all()
        assert (probes.loc[(probes.method != "maxact") & (probes.space == "sae"), "refused"] > 0).any()
        assert (probes["n_test"] == 40).all()  # 20 of 80 pairs held out, both members
        methods = pd.read_parquet(res / "concept_methods.parquet")
        means = probes.groupby(["concept", "space", "method"])["test_accuracy"].mean()
        for r in methods.itertuples():
            assert r.test_accuracy == pytest.approx(means[(r.concept, r.space, r.method)])
            assert r.ci_low <= r.test_accuracy <= r.ci_high
        found = pd.read_parquet(res / "concept_findings.parquet")
        assert set(found["finding"]) == {"rsa_vs_maxact", "sae_vs_raw", "discriminative_vs_categorical"}
        # SAE vs raw, one concept, by hand from the per-split rows
        wide = probes[probes.concept == "success"].pivot_table(index="split", columns="space",
                                                               values="test_accuracy", aggfunc="mean")
        row = found[(found.concept == "success") & (found.finding == "sae_vs_raw") & (found.scope == "all")].iloc[0]
        assert row.difference == pytest.approx((wide["sae"] - wide["raw"]).mean())


def test_stimulus_activations_match_plain_transformers(run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages_of_inference.core.models import read_manifest

    res = run / "results/tiny-llama"
    manifest = read_manifest(run / "results/models/tiny-llama/manifest.json")  # the weights folder resolved
    model = AutoModelForCausalLM.from_pretrained(manifest["path"], attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(manifest["path"])
    sentences = pd.read_parquet(res / "concept_sentences.parquet")
    stored = load_file(res / "concept_stimuli.safetensors")
    layer = int(sentences["layer"].iloc[0])
    assert layer == 4 // 2  # middle block of 4
    for i in (0, 100, len(sentences) - 1):
        ids = [tokenizer.bos_token_id] + tokenizer(sentences.text[i], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
        m = int(stored["lengths"][i])
        assert m == min(8, len(ids) - 1)
        torch.testing.assert_close(stored["patterns"][i, :m], hs[1 : 1 + m], rtol=1e-4, atol=1e-4)
    # the SAE loads from safetensors + JSON and encodes to its own width
    from stages_of_inference.concepts.rules import load_sae

    sae = load_sae(res / "concept_sae.safetensors", res / "concept_sae.json")
    assert sae.features(stored["patterns"][:2]).shape[-1] == sae.cfg.d_sae == 2 * 64
