"""Per-layer statistics (Figs. 4-8) on the core engine against independent computations:
plain transformers with hand-placed PyTorch hooks, the norms and lenses written out as
formulas, and the authors' notebook functions re-implemented here."""
import copy
import math

import numpy as np
import pandas as pd
import pytest
import scipy.special
import torch

from stages_of_inference.core.engine import Engine, parse_hook_name
from stages_of_inference.depth.compute import (
    DOCUMENT_COLUMNS,
    POOLED_COLUMNS,
    TOKEN_COLUMNS,
    batch_stats,
    document_means,
    extract_layer_stats,
    hook_names,
    lens_stats,
    neuron_type_counts,
    norm_ratio,
    prev_token_attention,
    prev_window_attention,
    summarise_layer_stats,
    table2_frame,
)

from conftest import tiny_hf_model


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


# -- previous-five attention: hand-made patterns and the authors' function ----------------------


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
    # every query's window: q = 1 has one entry per head (1 and 1), q = 2 two (1, 0 | 0, 1) ...
    mean, keys = prev_window_attention(pattern)
    assert keys.tolist() == [0, 1, 2, 3, 4, 5, 5, 5]
    assert torch.isnan(mean[0, 0])
    torch.testing.assert_close(mean[0, 1:], torch.tensor([1.0, 0.5, 1 / 3, 0.25, 0.2, 0.1, 0.1]))


def test_prev5_matches_loop_on_random_pattern():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 11, 11, generator=g)
    pattern = scores.masked_fill(torch.ones(11, 11).triu(1).bool(), -math.inf).softmax(-1)
    got = prev_token_attention(pattern)
    mean, keys = prev_window_attention(pattern)
    for b in range(2):
        for q in range(1, 11):
            n = min(q, 5)
            want = sum(pattern[b, h, q, q - d] for h in range(3) for d in range(1, n + 1)) / (3 * n)
            assert abs(float(mean[b, q]) - float(want)) < 1e-6
            if q >= 5:
                assert abs(float(got[b, q]) - float(want)) < 1e-6


def authors_prev5(patterns, k=5):
    """The authors' ``attention_prev5.ipynb``, re-implemented: per document and layer,
    ``np.nanmean`` of every entry of the sub-diagonals 1..k of every head's pattern
    (``np.diag(matrix[head], k=-i)``), then ``np.mean`` over documents.
    ``patterns``: ``[documents][layers] -> [heads, T, T]`` numpy arrays."""

    def extract_top_k_sub_diagonals_mean(matrix, k):
        sub_diagonals_means = []
        for head in range(matrix.shape[0]):
            for i in range(1, k + 1):
                sub_diagonals_means.extend(np.diag(matrix[head], k=-i))
        return np.nanmean(sub_diagonals_means)

    all_means = [[extract_top_k_sub_diagonals_mean(layer, k) for layer in doc] for doc in patterns]
    return np.mean(all_means, axis=0)


def random_patterns(n_docs, n_layers, heads, t, seed=0, sink=0.0):
    g = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(n_docs, n_layers, heads, t, t, generator=g)
    scores[..., 0] += sink  # attention piling up on the first position (BOS)
    return scores.masked_fill(torch.ones(t, t).triu(1).bool(), -math.inf).softmax(-1)


def table_from_patterns(patterns, first=1):
    """Per-token rows from our per-query statistics, as extract_layer_stats writes them."""
    n_docs, n_layers, _, t, _ = patterns.shape
    rows = []
    for layer in range(n_layers):
        mean, keys = prev_window_attention(patterns[:, layer])
        ours = prev_token_attention(patterns[:, layer])
        for doc in range(n_docs):
            for q in range(first, t):
                rows.append(dict(model="m", layer=layer, seq=doc, pos=q, prev5_attn=float(ours[doc, q]),
                                 prev5_attn_authors=float(mean[doc, q]), prev5_keys=int(keys[q]),
                                 lens_kl_authors=np.nan, lens_entropy_authors=np.nan))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("t", [4, 9, 23])
def test_prev5_authors_convention_is_their_function(t):
    """Per-document, keys-weighted means of our per-query values, averaged over documents,
    are the authors' function on the same patterns (sequences shorter than the window too);
    our q >= 5 convention is not (the BOS sink of queries 1-4 raises theirs)."""
    patterns = random_patterns(3, 2, 4, t, sink=3.0)
    want = authors_prev5(patterns.numpy())
    df = table_from_patterns(patterns)
    per_doc = document_means(df)
    got = per_doc.groupby("layer")["prev5_attn_authors"].mean().to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if t > 5:
        ours = df.groupby("layer")["prev5_attn"].mean().to_numpy()
        assert (ours < want - 0.01).all()


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
    """(decoder layers, attention write module path, MLP write module path, final norm,
    LayerNorm?), by each architecture's own attribute names. The write is what the block
    ADDS to the residual stream: the output projection, or on Gemma its post-norm."""
    if arch == "gpt2":
        return hf.transformer.h, ("attn", "c_proj"), ("mlp", "c_proj"), hf.transformer.ln_f, True
    if arch == "gpt_neox":
        return hf.gpt_neox.layers, ("attention", "dense"), ("mlp", "dense_4h_to_h"), hf.gpt_neox.final_layer_norm, True
    if arch == "gemma3_text":
        return (hf.model.layers, ("post_attention_layernorm",), ("post_feedforward_layernorm",), hf.model.norm,
                False)
    return hf.model.layers, ("self_attn", "o_proj"), ("mlp", "down_proj"), hf.model.norm, False


def _module(layer, path):
    for name in path:
        layer = getattr(layer, name)
    return layer


def hand_final_norm(hf, arch, x, scale_of=None, bias=True):
    """The final norm written out: ``g ⊙ c(x) / s(y) + b`` with ``y = scale_of`` (default
    ``x``): LayerNorm (GPT-2, Pythia: centred, variance), RMSNorm (Llama: weight), Gemma's
    offset RMSNorm (``1 + weight``). ``bias=False`` leaves out ``b``. Double precision."""
    _, _, _, norm, layer_norm = hf_modules(hf, arch)
    y = x if scale_of is None else scale_of
    w = norm.weight.detach().double()
    if layer_norm:
        eps = hf.config.layer_norm_epsilon if arch == "gpt2" else hf.config.layer_norm_eps
        s = torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + eps)
        out = (x - x.mean(-1, keepdim=True)) / s * w
        return out + norm.bias.detach().double() if bias else out
    s = torch.sqrt(y.pow(2).mean(-1, keepdim=True) + hf.config.rms_norm_eps)
    return x / s * (1.0 + w if arch == "gemma3_text" else w)


def hand_distribution_stats(logits, final_logits):
    """(KL(P_final || P) nats, H(P) bits) with scipy, double precision."""
    lp = scipy.special.log_softmax(logits.numpy(), -1)
    lf = scipy.special.log_softmax(final_logits.numpy(), -1)
    kl = (np.exp(lf) * (lf - lp)).sum(-1)
    return kl, scipy.special.entr(np.exp(lp)).sum(-1) / math.log(2)


def hand_stats(hf, arch, ids, first=1):
    """Independent computation with plain transformers and hand-placed PyTorch hooks:
    attention weights from ``output_attentions``; what attention and the MLP write from
    forward hooks on the modules whose output joins the residual stream (o_proj / c_proj /
    dense, down_proj / c_proj / dense_4h_to_h; Gemma's post_attention_layernorm and
    post_feedforward_layernorm); the residual stream after each block from forward hooks on
    the decoder layers (checked against ``output_hidden_states`` and against the sum of the
    inputs and writes), the embedding from ``hidden_states[0]``; the final norm, both
    lenses, KL and entropy written out here (:func:`hand_final_norm`, scipy). Returns the
    per-token table (layer -1: the embedding) and the model's logits."""
    layers, attn_path, mlp_path, _, layer_norm = hf_modules(hf, arch)
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
    t = ids.shape[1]
    hs = [h.double() for h in out.hidden_states]
    points = [hs[0]]  # the embedding (Gemma: already scaled by sqrt(d_model))
    for i in range(n):
        post = writes[("resid", i)]
        # the block's output is its input plus the two writes (parallel or sequential)
        torch.testing.assert_close(post, hs[i] + writes[("attn", i)] + writes[("mlp", i)], atol=1e-4, rtol=1e-4)
        if i < n - 1:  # HF's last hidden state is already normalised
            torch.testing.assert_close(post, hs[i + 1], atol=1e-4, rtol=1e-4)
        points.append(post)
    w_u = hf.get_output_embeddings().weight.detach().double()
    final_logits = out.logits.double()
    torch.testing.assert_close(hand_final_norm(hf, arch, points[-1]) @ w_u.T, final_logits, atol=1e-3, rtol=1e-4)
    rows = []
    for k, x in enumerate(points):
        layer = k - 1
        ours = hand_final_norm(hf, arch, x) @ w_u.T  # each point's own norm
        authors = hand_final_norm(hf, arch, x, scale_of=points[-1], bias=False) @ w_u.T  # the final scale
        kl, ent = hand_distribution_stats(ours, final_logits)
        kl_a, ent_a = hand_distribution_stats(authors, final_logits)
        if layer >= 0:
            pattern = out.attentions[layer].double()
            aw, mw = writes[("attn", layer)], writes[("mlp", layer)]
        for b in range(ids.shape[0]):
            for q in range(first, t):
                row = dict(layer=layer, seq=b, pos=q, lens_kl=kl[b, q], lens_entropy=ent[b, q],
                           lens_kl_authors=kl_a[b, q] if q < t - 1 else np.nan,
                           lens_entropy_authors=ent_a[b, q] if q < t - 1 else np.nan,
                           prev5_keys=min(q, 5))
                if layer < 0:
                    row.update({c: np.nan for c in ("prev5_attn", "prev5_attn_authors", "attn_norm", "mlp_norm",
                                                    "attn_norm_raw", "mlp_norm_raw")})
                else:
                    n_keys = min(q, 5)
                    window = float(sum(pattern[b, :, q, q - d].mean() for d in range(1, n_keys + 1)) / n_keys)
                    a, m = aw[b, q], mw[b, q]
                    row.update(prev5_attn=window if q >= 5 else np.nan, prev5_attn_authors=window,
                               attn_norm=float((a - a.mean() if layer_norm else a).norm()),
                               mlp_norm=float((m - m.mean() if layer_norm else m).norm()),
                               attn_norm_raw=float(a.norm()), mlp_norm_raw=float(m.norm()))
                rows.append(row)
    return pd.DataFrame(rows), out.logits


ARCHS = ("llama", "gpt2", "gpt_neox", "gemma3_text")


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
    assert set(names) == {"pattern", "attn_out", "mlp_out", "resid_post", "embedding"}
    for key, layer_names in names.items():
        assert [parse_hook_name(n)[0] for n in layer_names] == ([0] if key == "embedding" else [0, 1, 2])
    assert names["attn_out"][1] == "blocks.1.hook_attn_out"
    assert names["pattern"][2] == "blocks.2.attn.hook_pattern"
    assert names["embedding"] == ["blocks.0.hook_resid_pre"]


def test_layer_stats_match_hand_computation(tiny, ids):
    """Every column at every point (the embedding and each block) against plain transformers
    and hand formulas: Figure 4's two conventions, the writes' norms (Gemma: after its
    post-norms), both logit lenses (ours: each point's own norm; the authors': the final
    layer's scale on every point, no bias, NaN at the last position)."""
    hf, engine, arch = tiny
    got = extract_layer_stats(engine, ids, batch_size=2, first=1, progress=False)
    want, logits = hand_stats(hf, arch, ids, first=1)
    n = hf.config.num_hidden_layers
    assert len(got) == (n + 1) * ids.shape[0] * (ids.shape[1] - 1)
    assert sorted(got["layer"].unique()) == list(range(-1, n))
    assert got["pos"].min() == 1  # BOS skipped
    got = got.set_index(["layer", "seq", "pos"]).sort_index()
    want = want.set_index(["layer", "seq", "pos"]).sort_index()
    assert got.index.equals(want.index)
    assert set(want.columns) == set(TOKEN_COLUMNS) | {"prev5_keys"}
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
    # the two lenses differ before the last block (the final scale is not the point's own)
    emb = got.xs(-1, level="layer")
    assert (emb["lens_entropy_authors"] - emb["lens_entropy"]).abs().mean() > 1e-2
    if arch in ("llama", "gemma3_text"):  # no bias: at the last block the lenses agree
        before_last = last.index.get_level_values("pos") < ids.shape[1] - 1
        np.testing.assert_allclose(last["lens_entropy_authors"].dropna(), last["lens_entropy"][before_last], rtol=1e-5)
    if arch in ("gpt2", "gpt_neox"):  # LayerNorm models: the centred norm is smaller than the raw one
        blocks = got[got.index.get_level_values("layer") >= 0]
        assert (blocks["attn_norm"] <= blocks["attn_norm_raw"] + 1e-5).all()
        assert (blocks["mlp_norm"] < blocks["mlp_norm_raw"]).any()


def test_lens_is_the_engines_unembedding(tiny, ids):
    """``lens_*`` is the engine's own final norm + unembedding (Engine.unembed) of the
    engine's own residual stream at each point, and P_final its own logits."""
    _, engine, _ = tiny
    n = engine.n_layers
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n)]
    with torch.no_grad():
        logits, cache = engine.run_with_cache(ids, names)
        lps = [torch.log_softmax(engine.unembed(cache[name][:, 1:]).double(), -1) for name in names]
    final_lp = torch.log_softmax(logits[:, 1:].double(), -1)
    got = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    for k, lp in enumerate(lps):
        kl = (final_lp.exp() * (final_lp - lp)).sum(-1).reshape(-1).numpy()
        ent = (-(lp.exp() * lp).sum(-1) / math.log(2)).reshape(-1).numpy()
        g = got[got["layer"] == k - 1]
        np.testing.assert_allclose(g["lens_entropy"], ent, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g["lens_kl"], kl, rtol=1e-4, atol=2e-5)


def test_gemma_writes_are_after_the_post_norms(bpe_tokenizer, ids):
    """Tiny Gemma 3 (sandwich norms): ``attn_norm`` and ``mlp_norm`` are the norms of the
    post-norm outputs (what joins the residual stream), hooked by hand on
    post_attention_layernorm / post_feedforward_layernorm, and NOT those of o_proj /
    down_proj (the pre-norm outputs)."""
    hf = tiny_hf_model("gemma3_text", bpe_tokenizer)
    engine = Engine(copy.deepcopy(hf), attn_implementation="eager")
    grabbed = {}

    def grab(key):
        def hook(module, args, output):
            grabbed[key] = output.detach().double()

        return hook

    handles = []
    for i, layer in enumerate(hf.model.layers):
        for key, module in (("attn_post", layer.post_attention_layernorm),
                            ("mlp_post", layer.post_feedforward_layernorm),
                            ("attn_pre", layer.self_attn.o_proj), ("mlp_pre", layer.mlp.down_proj)):
            handles.append(module.register_forward_hook(grab((key, i))))
    try:
        with torch.no_grad():
            hf(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    got = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    for i in range(hf.config.num_hidden_layers):
        g = got[got["layer"] == i]
        for kind in ("attn", "mlp"):
            post = grabbed[(f"{kind}_post", i)][:, 1:].norm(dim=-1).reshape(-1).numpy()
            pre = grabbed[(f"{kind}_pre", i)][:, 1:].norm(dim=-1).reshape(-1).numpy()
            np.testing.assert_allclose(g[f"{kind}_norm"], post, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(g[f"{kind}_norm_raw"], post, rtol=1e-4, atol=1e-5)
            assert np.abs(g[f"{kind}_norm"].to_numpy() / pre - 1).min() > 1e-3


def test_gemma_logit_lens_by_hand_with_offset_norm(bpe_tokenizer, ids):
    """Tiny Gemma 3: both lenses from the hand formula of its offset final norm,
    ``x / sqrt(mean x² + eps) ⊙ (1 + w)`` with non-trivial ``w`` (ours: each point's own
    RMS; the authors': the final residual's RMS on every point); the plain ``w`` fails."""
    hf = tiny_hf_model("gemma3_text", bpe_tokenizer)
    assert hf.model.norm.weight.abs().max() > 0.1  # an offset that matters
    engine = Engine(copy.deepcopy(hf), attn_implementation="eager")
    last = {}
    handle = hf.model.layers[-1].register_forward_hook(lambda m, a, out: last.update(x=out.detach().double()))
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    points = [h.double() for h in out.hidden_states[:-1]] + [last["x"]]  # embedding, blocks 0..n-1
    got = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    w, eps = hf.model.norm.weight.detach().double(), hf.config.rms_norm_eps
    w_u = hf.lm_head.weight.detach().double()

    def rms(h):
        return torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps)

    final_logits = out.logits.double()[:, 1:]
    for k, x in enumerate(points):
        g = got[got["layer"] == k - 1]
        authors_rows = g["pos"] < ids.shape[1] - 1
        for gain, ok in ((1.0 + w, True), (w, False)):
            _, ent = hand_distribution_stats((x / rms(x) * gain @ w_u.T)[:, 1:], final_logits)
            assert np.allclose(g["lens_entropy"], ent.reshape(-1), rtol=1e-4, atol=1e-5) == ok
            _, ent_a = hand_distribution_stats((x / rms(points[-1]) * gain @ w_u.T)[:, 1:-1], final_logits[:, :-1])
            assert np.allclose(g["lens_entropy_authors"][authors_rows], ent_a.reshape(-1), rtol=1e-4, atol=1e-5) == ok
        assert g["lens_entropy_authors"][~authors_rows].isna().all()  # the last position dropped


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


def test_lens_chunks_and_blocks_agree(tiny, ids):
    """Rows unembedded a few at a time (chunks of two rows, blocks of one) give the numbers
    of one chunk."""
    from stages_of_inference.depth import compute

    _, engine, _ = tiny
    whole = batch_stats(engine, ids, 1, chunk_bytes=1 << 30)
    chunked = batch_stats(engine, ids, 1, chunk_bytes=2 * 4 * engine.d_vocab)
    for col in compute.LENS_COLUMNS:
        torch.testing.assert_close(whole[col], chunked[col], rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.slow  # one of the longest: `make test` runs it
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
    """Pooled columns: mean and SE over tokens; the authors' columns: per document, then
    over documents; the embedding at layer -1, with both x axes."""
    _, engine, _ = tiny
    df = extract_layer_stats(engine, ids, batch_size=3, first=1, progress=False)
    df.insert(0, "model", "tiny")
    n = engine.n_layers
    s = summarise_layer_stats(df, n)
    assert list(s["layer"]) == list(range(-1, n))
    np.testing.assert_allclose(s["rel_depth"], np.arange(-1, n) / (n - 1))
    np.testing.assert_allclose(s["rel_depth_authors"], np.arange(0, n + 1) / n)
    g = df[df["layer"] == 1]
    row = s[s["layer"] == 1].iloc[0]
    assert row["prev5_attn_mean"] == pytest.approx(g["prev5_attn"].mean())  # NaNs skipped
    assert row["prev5_attn_se"] == pytest.approx(g["prev5_attn"].std() / np.sqrt(g["prev5_attn"].count()))
    assert row["attn_mlp_ratio_mean"] == pytest.approx(g["attn_norm"].mean() / g["mlp_norm"].mean())
    # the authors' aggregation, by hand: per document (prev5 weighted by its keys), then documents
    docs = [d for _, d in g.groupby("seq")]
    prev = [np.nansum(d["prev5_attn_authors"] * d["prev5_keys"])
            / d["prev5_keys"][d["prev5_attn_authors"].notna()].sum() for d in docs]
    ent = [d["lens_entropy_authors"].iloc[:-1].mean() for d in docs]  # the last position dropped
    assert row["prev5_attn_authors_mean"] == pytest.approx(np.mean(prev), rel=1e-6)
    assert row["prev5_attn_authors_se"] == pytest.approx(np.std(prev, ddof=1) / np.sqrt(len(docs)), rel=1e-4)
    assert row["lens_entropy_authors_mean"] == pytest.approx(np.mean(ent), rel=1e-6)
    assert row["n_documents"] == len(docs) and row["n_tokens"] == len(g)
    emb = s[s["layer"] == -1].iloc[0]
    assert np.isnan(emb["attn_norm_mean"]) and np.isnan(emb["attn_mlp_ratio_mean"])
    assert np.isfinite(emb["lens_entropy_mean"]) and np.isfinite(emb["lens_entropy_authors_mean"])
    assert set(f"{c}_mean" for c in POOLED_COLUMNS + DOCUMENT_COLUMNS) <= set(s.columns)


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


def summary_rows(models=(("a", 4, 1.0), ("b", 7, 100.0))):
    """Per-layer summary rows (embedding included) of made-up models: every statistic grows
    with depth, the authors' lens entropy falls."""
    rows = []
    for model, n, scale in models:
        for layer in range(-1, n):
            row = {"model": model, "layer": layer, "n_layers": n, "rel_depth": layer / (n - 1),
                   "rel_depth_authors": (layer + 1) / n, "d_vocab": 512}
            for col in POOLED_COLUMNS + DOCUMENT_COLUMNS + ("attn_mlp_ratio",):
                value = scale * (2 + layer)
                row[f"{col}_mean"], row[f"{col}_se"] = value, 0.1
            row["lens_entropy_authors_mean"] = 9.0 - layer
            rows.append(row)
    return pd.DataFrame(rows)


def test_figures_and_table2_render(tmp_path):
    """The figure functions draw every model from tables alone (no model is run)."""
    from stages_of_inference.core.io import write_json
    from stages_of_inference.core.plotting import model_styles
    from stages_of_inference.depth.rules import plot_depth, table2

    all_rows = summary_rows()
    neurons = []
    for model, n in (("a", 4), ("b", 7)):
        for layer in range(n):
            for neuron, kind in enumerate(("prediction", "suppression", "other")):
                neurons.append({"model": model, "layer": layer, "neuron": neuron, "skew": 0.0,
                                "kurtosis": 3.0, "type": kind})
    summaries, tables, infos = [], [], []
    all_neurons = pd.DataFrame(neurons)
    for model in ("a", "b"):
        summaries.append(tmp_path / f"{model}.parquet")
        all_rows[all_rows.model == model].to_parquet(summaries[-1])
        tables.append(tmp_path / f"{model}_neurons.parquet")
        all_neurons[all_neurons.model == model].to_parquet(tables[-1])
        infos.append(tmp_path / f"{model}.json")
        write_json({"model": model, "family": "X", "parameters": 1234567, "layers": 4, "d_model": 8,
                    "heads": 2, "terms": "Apache 2.0"}, infos[-1])
    styles = model_styles({"a": {"source": "embedded"}, "b": {"source": "random"}})
    for n in (4, 5, 6, 7, 8):
        out = tmp_path / f"fig{n}.pdf"
        plot_depth(number=n, summaries=summaries, neurons=tables if n == 6 else [], styles=styles, out_pdf=out)
        assert out.read_bytes()[:5] == b"%PDF-" and out.stat().st_size > 5_000
    table2(infos=infos, out_csv=tmp_path / "t.csv", out_md=tmp_path / "t.md")
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == ["model", "family", "parameters", "layers",
                                                            "d_model", "heads", "terms"]
    md = (tmp_path / "t.md").read_text()
    assert "1.2M" in md and "| terms" in md and "Apache 2.0" in md


def test_figures_draw_every_model_in_its_style(monkeypatch):
    """Figures 4 and 8: two panels, one line per model in its style (the control grey and
    dashed) in each; Figure 8 names the models whose entropy falls with depth per panel;
    Figure 6: a panel per model."""
    from stages_of_inference.core.plotting import model_styles
    from stages_of_inference.depth import figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out: drawn.append(fig))
    summary = summary_rows((("a", 4, 1.0), ("ctl", 5, 1.0)))
    styles = model_styles({"a": {"source": "embedded"}, "ctl": {"source": "random"}})
    figures.plot_fig8(summary, "x.pdf", styles=styles)
    figures.plot_fig4(summary, "x.pdf", styles=styles)
    counts = pd.DataFrame({"model": ["a"] * 4 + ["ctl"] * 5, "prediction": 1, "suppression": 0,
                           "rel_depth": [0, 1 / 3, 2 / 3, 1, 0, 0.25, 0.5, 0.75, 1]})
    figures.plot_fig6(summary, counts, "x.pdf", styles=styles)
    fig8, fig4, fig6 = drawn
    for fig in (fig8, fig4):
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == 2
        for ax in panels:
            lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
            assert lines["a"].get_color() == styles["a"]["color"] and lines["a"].get_linestyle() == "-"
            assert lines["ctl (random weights)"].get_color() == styles["ctl"]["color"]
            assert lines["ctl (random weights)"].get_linestyle() == "--"
    ours, authors = fig8.axes[:2]
    assert "falls with depth in none" in ours.get_title()  # made-up entropy grows with depth
    assert "FALLS with depth in: a, ctl" in authors.get_title()
    # the authors' panel starts at the embedding (x = 0) and has one point more per model
    a_line = [line for line in authors.get_lines() if line.get_label() == "a"][0]
    assert list(a_line.get_xdata()) == [0, 0.25, 0.5, 0.75, 1.0]
    assert len([line for line in ours.get_lines() if line.get_label() == "a"][0].get_xdata()) == 4
    titles = [ax.get_title() for ax in fig6.axes if ax.get_title()]
    assert titles == ["a", "ctl (random weights)"]


def test_entropy_trend_needs_a_real_fall():
    """'Falls with depth': a monotone fall of more than 5 % of the top; a flat line (random
    weights near log2 V) with a tiny monotone drift does not fall, nor does a rise."""
    from stages_of_inference.depth.figures import entropy_trend

    def rows(values):
        return pd.DataFrame({"layer": range(-1, len(values) - 1), "lens_entropy_mean": values})

    assert entropy_trend(rows([15.5, 13.5, 9.1, 5.4, 4.45]), "lens_entropy") == (pytest.approx(-1.0), True)
    assert entropy_trend(rows([8.999, 8.998, 8.997, 8.996]), "lens_entropy")[1] is False
    assert entropy_trend(rows([2.0, 1.4, 1.3, 3.5, 4.45]), "lens_entropy")[1] is False
