"""Per-layer statistics (Figs. 4-8) on the core engine against a hand-written pass over
plain transformers with hand-placed PyTorch hooks."""
import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_hf_model
from stages_of_inference.core.engine import Engine, parse_hook_name
from stages_of_inference.depth.compute import (
    extract_layer_stats,
    hook_names,
    lens_stats,
    neuron_type_counts,
    norm_ratio,
    prev_token_attention,
    summarise_layer_stats,
    table2_frame,
)


# -- previous-five attention on hand-made patterns ------------------------------------------


def test_lens_stats_blocked_equals_whole_and_hand_kl():
    """The CPU's row-blocked logit-lens statistics are the unblocked ones bit for bit, and
    both are KL(P_final || P_lens) in nats and the entropy of P_lens in bits."""
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 5, 300, generator=g)
    final = torch.log_softmax(3 * torch.randn(2, 5, 300, generator=g), -1)
    kl, h = lens_stats(logits, final, block_bytes=None)
    for block_bytes in (1, 4 * 300 * 3, 1 << 19):  # one row, three rows, everything per block
        kl_b, h_b = lens_stats(logits, final, block_bytes=block_bytes)
        assert kl_b.shape == h_b.shape == (2, 5)
        assert torch.equal(kl, kl_b) and torch.equal(h, h_b)
    p, q = final.double().exp(), torch.softmax(logits.double(), -1)
    hand_kl = (p * (p.log() - q.log())).sum(-1)
    hand_h = -(q * q.log()).sum(-1) / math.log(2)
    torch.testing.assert_close(kl.double(), hand_kl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h.double(), hand_h, rtol=1e-4, atol=1e-5)


def test_prev5_on_hand_made_pattern():
    t = 8
    pattern = torch.zeros(1, 2, t, t)
    for q in range(t):
        pattern[0, 0, q, max(q - 1, 0)] = 1.0  # head 0: previous-token head
        pattern[0, 1, q, 0] = 1.0  # head 1: everything on the first position
    got = prev_token_attention(pattern)[0]
    assert torch.isnan(got[:5]).all()  # fewer than five earlier positions
    # q = 5: head 0 puts 1 on q-1, head 1 puts 1 on q-5 = 0 -> mean of 5 entries 0.2 each
    torch.testing.assert_close(got[5:], torch.tensor([0.2, 0.1, 0.1]))


def test_prev5_matches_loop_on_random_pattern():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 11, 11, generator=g)
    pattern = scores.masked_fill(torch.ones(11, 11).triu(1).bool(), -math.inf).softmax(-1)
    got = prev_token_attention(pattern)
    for b in range(2):
        for q in range(5, 11):
            want = sum(pattern[b, h, q, q - d] for h in range(3) for d in range(1, 6)) / 15
            assert abs(float(got[b, q]) - float(want)) < 1e-6


def test_norm_ratio_delta_method():
    g = np.random.default_rng(0)
    a, m = g.gamma(4.0, 1.0, 4000), g.gamma(9.0, 1.0, 4000)
    ratio, se = norm_ratio(a, m)
    assert ratio == pytest.approx(a.mean() / m.mean())
    # the spread of the ratio over bootstrap resamples matches the delta-method SE
    boot = []
    for _ in range(300):
        i = g.integers(0, len(a), len(a))
        boot.append(a[i].mean() / m[i].mean())
    assert se == pytest.approx(np.std(boot), rel=0.2)


# -- the whole pass on the engine against plain transformers ---------------------------------


def hf_modules(hf, arch):
    """(decoder layers, attention output projection name path, MLP down projection name path,
    final norm, LayerNorm?), by each architecture's own attribute names."""
    if arch == "gpt2":
        return hf.transformer.h, ("attn", "c_proj"), ("mlp", "c_proj"), hf.transformer.ln_f, True
    if arch == "gpt_neox":
        return hf.gpt_neox.layers, ("attention", "dense"), ("mlp", "dense_4h_to_h"), hf.gpt_neox.final_layer_norm, True
    return hf.model.layers, ("self_attn", "o_proj"), ("mlp", "down_proj"), hf.model.norm, False


def _module(layer, path):
    for name in path:
        layer = getattr(layer, name)
    return layer


def hand_stats(hf, arch, ids, first=1):
    """Independent computation with plain transformers and hand-placed PyTorch hooks:
    attention weights from ``output_attentions``, what attention and the MLP write from
    forward hooks on their output projections (o_proj / c_proj / dense, down_proj / c_proj /
    dense_4h_to_h), the residual stream after each block from forward hooks on the decoder
    layers (checked against ``output_hidden_states`` and against the sum of the inputs and
    writes), the formulas written out here."""
    layers, attn_path, mlp_path, final_norm, layer_norm = hf_modules(hf, arch)
    writes = {}

    def grab(key):
        def hook(module, args, output):
            writes[key] = (output[0] if isinstance(output, tuple) else output).detach().double()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(_module(layer, attn_path).register_forward_hook(grab(("attn", i))))
        handles.append(_module(layer, mlp_path).register_forward_hook(grab(("mlp", i))))
        handles.append(layer.register_forward_hook(grab(("resid", i))))
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, output_hidden_states=True, output_attentions=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    n = len(layers)
    hs = [h.double() for h in out.hidden_states]
    resid = []
    for i in range(n):
        post = writes[("resid", i)]
        # the block's output is its input plus the two writes (parallel or sequential)
        torch.testing.assert_close(post, hs[i] + writes[("attn", i)] + writes[("mlp", i)], atol=1e-4, rtol=1e-4)
        if i < n - 1:  # HF's last hidden state is already normalised
            torch.testing.assert_close(post, hs[i + 1], atol=1e-4, rtol=1e-4)
        resid.append(post)
    final_lp = torch.log_softmax(out.logits.double(), -1)
    rows = []
    for i in range(n):
        with torch.no_grad():
            lens = hf.lm_head(final_norm(resid[i].float())).double()
        lp = torch.log_softmax(lens, -1)
        kl = (final_lp.exp() * (final_lp - lp)).sum(-1)
        ent = -(lp.exp() * lp).sum(-1) / math.log(2)
        pattern = out.attentions[i].double()
        aw, mw = writes[("attn", i)], writes[("mlp", i)]
        for b in range(ids.shape[0]):
            for q in range(first, ids.shape[1]):
                prev = (sum(pattern[b, :, q, q - d].mean() for d in range(1, 6)) / 5) if q >= 5 else float("nan")
                a, m = aw[b, q], mw[b, q]
                rows.append(
                    dict(layer=i, seq=b, pos=q, prev5_attn=float(prev),
                         attn_norm=float((a - a.mean() if layer_norm else a).norm()),
                         mlp_norm=float((m - m.mean() if layer_norm else m).norm()),
                         attn_norm_raw=float(a.norm()), mlp_norm_raw=float(m.norm()),
                         lens_kl=float(kl[b, q]), lens_entropy=float(ent[b, q]))
                )
    return pd.DataFrame(rows), out.logits


ARCHS = ("llama", "gpt2", "gpt_neox")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, bpe_tokenizer):
    """(independent plain HF model, eager engine over a copy of it, arch)."""
    hf = tiny_hf_model(request.param, bpe_tokenizer)
    return hf, Engine(copy.deepcopy(hf), attn_implementation="eager"), request.param


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 500, (3, 13), generator=g)
    ids[:, 0] = 0  # BOS of the bpe tokenizer
    return ids


def test_hook_names_are_the_engines():
    """One vocabulary: every hook the study uses is an engine hook point."""
    names = hook_names(3)
    assert set(names) == {"pattern", "attn_out", "mlp_out", "resid_post"}
    for layer_names in names.values():
        assert [parse_hook_name(n)[0] for n in layer_names] == [0, 1, 2]
    assert names["attn_out"][1] == "blocks.1.hook_attn_out"
    assert names["pattern"][2] == "blocks.2.attn.hook_pattern"


def test_layer_stats_match_hand_computation(tiny, ids):
    hf, engine, arch = tiny
    got = extract_layer_stats(engine, ids, batch_size=2, first=1, progress=False)
    want, logits = hand_stats(hf, arch, ids, first=1)
    n = hf.config.num_hidden_layers
    assert len(got) == n * ids.shape[0] * (ids.shape[1] - 1)
    assert got["pos"].min() == 1  # BOS skipped
    got = got.set_index(["layer", "seq", "pos"]).sort_index()
    want = want.set_index(["layer", "seq", "pos"]).sort_index()
    assert got.index.equals(want.index)
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=2e-4, atol=2e-5,
                                   err_msg=f"{arch} {col}")
    # the statistics say something: the last layer's lens is the model's own output,
    # earlier layers differ from it; entropy is within [0, log2 V]
    last = got.xs(n - 1, level="layer")
    assert last["lens_kl"].abs().max() < 1e-4
    assert got.xs(0, level="layer")["lens_kl"].mean() > 1e-2
    assert (got["lens_entropy"] <= math.log2(logits.shape[-1]) + 1e-4).all()
    assert got["lens_entropy"].min() >= 0
    if arch != "llama":  # LayerNorm models: the centred norm is smaller than the raw one
        assert (got["attn_norm"] <= got["attn_norm_raw"] + 1e-5).all()
        assert (got["mlp_norm"] < got["mlp_norm_raw"]).any()


def test_sdpa_engine_is_refused(tiny, ids):
    """Attention patterns need eager attention: an sdpa engine fails loudly."""
    hf, _, _ = tiny
    with pytest.raises(ValueError, match="eager"):
        extract_layer_stats(Engine(copy.deepcopy(hf), attn_implementation="sdpa"), ids, progress=False)


def test_double_normalisation_pitfall_is_avoided(tiny, ids):
    """Applying the final norm again to HF's last hidden state (already normalised) gives a
    different distribution once the norm has non-trivial weights; the lens at the last
    layer must equal the model's own output."""
    hf, _, arch = tiny
    hf = copy.deepcopy(hf)
    layers, _, _, final_norm, _ = hf_modules(hf, arch)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        final_norm.weight.copy_(0.5 + 2 * torch.rand(final_norm.weight.shape, generator=g))
        out = hf(input_ids=ids, output_hidden_states=True, use_cache=False)
        twice = hf.lm_head(final_norm(out.hidden_states[-1]))
    double_kl = torch.nn.functional.kl_div(twice.log_softmax(-1), out.logits.log_softmax(-1),
                                           log_target=True, reduction="none").sum(-1)[:, 1:]
    engine = Engine(copy.deepcopy(hf), attn_implementation="eager")
    got = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    last = got[got["layer"] == len(layers) - 1]
    assert last["lens_kl"].max() < 1e-4 < double_kl.mean()


def test_streaming_batches_agree(tiny, ids):
    _, engine, _ = tiny
    a = extract_layer_stats(engine, ids, batch_size=1, first=1, progress=False)
    b = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=1e-4)


def test_out_of_memory_halves_the_batch(tiny, ids, monkeypatch):
    """A CUDA out-of-memory error on a batch of more than one sequence is retried at half
    the size (core.engine.batched); the table is the same."""
    from stages_of_inference.depth import compute

    _, engine, _ = tiny
    want = extract_layer_stats(engine, ids, batch_size=1, first=1, progress=False)
    real, sizes = compute.batch_stats, []

    def flaky(engine, input_ids, first=1):
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(engine, input_ids, first)

    monkeypatch.setattr(compute, "batch_stats", flaky)
    got = extract_layer_stats(engine, ids, batch_size=2, first=1, progress=False)
    assert sizes == [2, 1, 1, 1]
    pd.testing.assert_frame_equal(got, want)


def test_summary(tiny, ids):
    _, engine, _ = tiny
    df = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    df.insert(0, "model", "tiny")
    n = engine.n_layers
    s = summarise_layer_stats(df, n)
    assert list(s["layer"]) == list(range(n))
    np.testing.assert_allclose(s["rel_depth"], np.arange(n) / (n - 1))
    g = df[df["layer"] == 1]
    row = s[s["layer"] == 1].iloc[0]
    assert row["prev5_attn_mean"] == pytest.approx(g["prev5_attn"].mean())  # NaNs skipped
    assert row["prev5_attn_se"] == pytest.approx(g["prev5_attn"].std() / np.sqrt(g["prev5_attn"].count()))
    assert row["attn_mlp_ratio_mean"] == pytest.approx(g["attn_norm"].mean() / g["mlp_norm"].mean())


# -- Figure 6's counts, Table 2, and the figure rules ------------------------------------------


def test_neuron_type_counts_use_the_summarys_layers():
    """Counts per layer for every layer of each model (from the summary's n_layers, so
    trailing layers without classified neurons count 0), with relative depth."""
    summary = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 3, "layer": [0, 1, 2, 3, 0, 1, 2],
                            "n_layers": [4] * 4 + [3] * 3})
    neurons = pd.DataFrame({"model": ["a", "a", "a", "b", "b"], "layer": [0, 0, 1, 0, 0],
                            "neuron": [0, 1, 0, 0, 1],
                            "type": ["prediction", "suppression", "prediction", "other", "prediction"]})
    counts = neuron_type_counts(summary, neurons)
    assert list(counts["model"]) == ["a"] * 4 + ["b"] * 3
    assert list(counts["layer"]) == [0, 1, 2, 3, 0, 1, 2]
    assert list(counts["prediction"]) == [1, 1, 0, 0, 1, 0, 0]
    assert list(counts["suppression"]) == [1, 0, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(counts["rel_depth"], [0, 1 / 3, 2 / 3, 1, 0, 0.5, 1])


def test_table2_frame_keeps_order_and_columns():
    rows = [{"model": "b", "family": "F", "parameters": 10, "layers": 2, "d_model": 8, "heads": 2, "extra": 1,
             "terms": "T"},
            {"heads": 4, "d_model": 16, "layers": 3, "parameters": 20, "family": "G", "model": "a", "terms": "U"}]
    table = table2_frame(rows)
    assert list(table.columns) == ["model", "family", "parameters", "layers", "d_model", "heads", "terms"]
    assert list(table["model"]) == ["b", "a"] and list(table["heads"]) == [2, 4]


def test_figures_and_table2_render(tmp_path):
    """The figure functions draw every model from tables alone (no model is run)."""
    from stages_of_inference.core.io import write_json
    from stages_of_inference.depth.rules import plot_depth, table2

    rows, neurons = [], []
    for model, n, scale in (("a", 4, 1.0), ("b", 7, 100.0)):
        for layer in range(n):
            row = {"model": model, "layer": layer, "n_layers": n, "rel_depth": layer / (n - 1)}
            for col in ("prev5_attn", "attn_norm", "mlp_norm", "attn_norm_raw", "mlp_norm_raw",
                        "lens_kl", "lens_entropy", "attn_mlp_ratio"):
                row[f"{col}_mean"], row[f"{col}_se"] = scale * (1 + layer), 0.1
            rows.append(row)
            for neuron, kind in enumerate(("prediction", "suppression", "other")):
                neurons.append({"model": model, "layer": layer, "neuron": neuron, "skew": 0.0,
                                "kurtosis": 3.0, "type": kind})
    summaries, tables, infos = [], [], []
    all_rows, all_neurons = pd.DataFrame(rows), pd.DataFrame(neurons)
    for model in ("a", "b"):
        summaries.append(tmp_path / f"{model}.parquet")
        all_rows[all_rows.model == model].to_parquet(summaries[-1])
        tables.append(tmp_path / f"{model}_neurons.parquet")
        all_neurons[all_neurons.model == model].to_parquet(tables[-1])
        infos.append(tmp_path / f"{model}.json")
        write_json({"model": model, "family": "X", "parameters": 1234567, "layers": 4, "d_model": 8,
                    "heads": 2, "terms": "Apache 2.0"}, infos[-1])
    for n in (4, 5, 6, 7, 8):
        out = tmp_path / f"fig{n}.pdf"
        plot_depth(number=n, summaries=summaries, neurons=tables if n == 6 else [], styles={}, out_pdf=out)
        assert out.read_bytes()[:5] == b"%PDF-" and out.stat().st_size > 5_000
    table2(infos=infos, out_csv=tmp_path / "t.csv", out_md=tmp_path / "t.md")
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == ["model", "family", "parameters", "layers",
                                                            "d_model", "heads", "terms"]
    assert "1.2M" in (tmp_path / "t.md").read_text()
