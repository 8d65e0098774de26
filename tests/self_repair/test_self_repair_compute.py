"""Self-repair numbers against independent computations on real random-weight models:
plain transformers forward passes with PyTorch hooks and hand formulas (no engine)."""
import copy

import numpy as np
import pytest
import torch

from conftest import tiny_hf_model
from stages_of_inference.core.engine import Engine
from stages_of_inference.self_repair.compute import run_self_repair

PARTS = {  # arch -> (layers, o_proj, final norm, mlp output projection)
    "llama": (lambda m: m.model.layers, lambda b: b.self_attn.o_proj, lambda m: m.model.norm,
              lambda b: b.mlp.down_proj),
    "gpt2": (lambda m: m.transformer.h, lambda b: b.attn.c_proj, lambda m: m.transformer.ln_f,
             lambda b: b.mlp.c_proj),
    "gpt_neox": (lambda m: m.gpt_neox.layers, lambda b: b.attention.dense,
                 lambda m: m.gpt_neox.final_layer_norm, lambda b: b.mlp.dense_4h_to_h),
}


def tokens_for(model, n_seq=3, seq_len=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (n_seq, seq_len), generator=g)


class HandRun:
    """One plain forward pass of a transformers model, optionally replacing one head's
    slice of the o_proj input; records o_proj inputs, MLP outputs, the final residual."""

    def __init__(self, model, arch, tokens, edit=None):
        layers_of, o_of, norm_of, mlp_of = PARTS[arch]
        self.o_in, self.mlp_out = {}, {}
        handles = []
        for i, block in enumerate(layers_of(model)):
            def pre(module, args, i=i):
                x = args[0]
                if edit is not None and edit[0] == i:
                    x = edit[1](x.clone())
                self.o_in[i] = x.detach()
                return (x, *args[1:])

            def mlp_hook(module, args, out, i=i):
                self.mlp_out[i] = out.detach()

            handles.append(o_of(block).register_forward_pre_hook(pre))
            handles.append(mlp_of(block).register_forward_hook(mlp_hook))
        handles.append(norm_of(model).register_forward_pre_hook(
            lambda m, a: setattr(self, "final", a[0].detach())))
        with torch.no_grad():
            self.logits = model(input_ids=tokens).logits
        for h in handles:
            h.remove()


def hand_readout(model, arch, x, targets):
    """x·ũ / s for the targets, by hand: ũ = g ⊙ W_U[tok] (centred for LayerNorm)."""
    norm = PARTS[arch][2](model)
    u = model.lm_head.weight[targets] * norm.weight
    if isinstance(norm, torch.nn.LayerNorm):
        u = u - u.mean(-1, keepdim=True)
        s = torch.sqrt(x.var(-1, unbiased=False) + norm.eps)
    else:
        s = torch.sqrt(x.pow(2).mean(-1) + norm.variance_epsilon)
    return u, s


@pytest.mark.parametrize("arch,ablation", [("llama", "mean"), ("gpt2", "zero"), ("gpt_neox", "resample")])
@torch.no_grad()
def test_effects_match_hand_computation(bpe_tokenizer, arch, ablation):
    model = tiny_hf_model(arch, bpe_tokenizer, seed=3)
    tokens = tokens_for(model)
    res = run_self_repair(Engine(copy.deepcopy(model)), tokens, first=1, ablation=ablation,
                          target="top1", top_fraction=0.25, batch_size=3, progress=False)
    df = res.tokens.set_index(["layer", "head", "seq", "pos"]).sort_index()
    n_heads = model.config.num_attention_heads if arch != "gpt2" else model.config.n_head
    d = model.config.hidden_size if arch != "gpt2" else model.config.n_embd
    dh = d // n_heads
    clean = HandRun(model, arch, tokens)
    pos = slice(1, tokens.shape[1])
    targets = clean.logits[:, pos].argmax(-1)
    u, s = hand_readout(model, arch, clean.final[:, pos], targets)
    logit = clean.logits[:, pos].gather(-1, targets[..., None])[..., 0]
    layers = PARTS[arch][0](model)
    n = len(layers)
    assert (df.loc[(slice(None), slice(None), 0, 1), "target"].to_numpy()[:1] == targets[0, 0].item()).all()
    for layer in (1, n - 1):
        o_proj = PARTS[arch][1](layers[layer])
        w = o_proj.weight if isinstance(o_proj, torch.nn.Linear) else o_proj.weight.t()  # [d, H*dh]
        z = clean.o_in[layer]
        if ablation == "mean":
            repl = z.mean((0, 1)).expand_as(z)
        elif ablation == "zero":
            repl = torch.zeros_like(z)
        else:
            repl = z.roll(1, 0)
        for h in range(n_heads):
            sl = slice(h * dh, (h + 1) * dh)
            de = (((z[..., sl] - repl[..., sl]) @ w[:, sl].T)[:, pos] * u).sum(-1) / s

            def edit(x, sl=sl):
                x[..., sl] = repl[..., sl]
                return x

            abl = HandRun(model, arch, tokens, edit=(layer, edit))
            logit_abl = abl.logits[:, pos].gather(-1, targets[..., None])[..., 0]
            te = logit - logit_abl
            # the ablated residual read with the *baseline* scale (frozen final norm)
            x_abl = abl.final[:, pos]
            frozen = logit - ((clean.final[:, pos] - x_abl) * u).sum(-1) / s
            sr_norm = logit_abl - frozen
            sr_mlp = sum(((abl.mlp_out[j] - clean.mlp_out[j])[:, pos] * u).sum(-1) / s
                         for j in range(layer, n))
            got = df.loc[(layer, h)]
            for name, want in (("de", de), ("te", te), ("self_repair", de - te),
                               ("sr_norm", sr_norm), ("sr_mlp", sr_mlp)):
                np.testing.assert_allclose(got[name].to_numpy(), want.flatten().numpy(),
                                           atol=2e-4, rtol=1e-3, err_msg=f"{arch} L{layer}H{h} {name}")
    # the per-head table is the mean over each head's top tokens
    heads = res.heads.set_index(["layer", "head"])
    top = res.tokens[res.tokens["top"]].groupby(["layer", "head"])["self_repair"].mean()
    np.testing.assert_allclose(heads["self_repair"].to_numpy(), top.to_numpy(), rtol=1e-6)
    assert (heads["n_top"] >= 1).all() and (heads["n_top"] < heads["n_tokens"]).all()


def test_head_zeroed_in_weights_has_no_effect(bpe_tokenizer):
    model = tiny_hf_model("llama", bpe_tokenizer, seed=4)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight[:, 16:32] = 0  # head 1 of layer 1
    res = run_self_repair(Engine(model), tokens_for(model), ablation="mean", top_fraction=0.2,
                          batch_size=3, progress=False)
    t = res.tokens
    dead = t[(t["layer"] == 1) & (t["head"] == 1)]
    for col in ("de", "te", "self_repair", "sr_norm", "sr_attn", "sr_mlp"):
        assert dead[col].abs().max() < 1e-5, col
    alive = t[(t["layer"] == 1) & (t["head"] == 0)]
    assert alive["de"].abs().mean() > 1e-2 and alive["te"].abs().mean() > 1e-2


def planted_model(bpe_tokenizer, backup: bool):
    """Two layers, uniform attention (q = 0), no MLPs. Head 0 of layer 0 writes
    c·mean_s V n(e_s) into dims 32..47 (embeddings live in dims 0..31). With ``backup``,
    head 0 of layer 1 computes the same from the embeddings *minus* what it finds in dims
    32..47: silent while head (0, 0) works, its stand-in when head (0, 0) is ablated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=len(bpe_tokenizer), hidden_size=64,
                               intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=4, max_position_embeddings=64,
                               tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        e = torch.randn(cfg.vocab_size, 32, generator=g)
        e = e / e.pow(2).mean(-1, keepdim=True).sqrt()  # rms 1 over 32 dims -> rms 1/sqrt(2) over 64
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :32] = e
        v = torch.randn(16, 32, generator=g) / 32 ** 0.5
        c = 0.25
        rms_e = 0.5 ** 0.5
        for layer in model.model.layers:
            att = layer.self_attn
            att.q_proj.weight.zero_()
            att.v_proj.weight.zero_()
            att.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            att.o_proj.weight[32:48, :16] = c * torch.eye(16)
        model.model.layers[0].self_attn.v_proj.weight[:16, :32] = v
        if backup:
            # n(x) = x / rms(x), rms(x) ~ rms(e): V n(x)_{0..31} - n(x)_{32..47} rms(e) / c
            # ~ (V e_t - mean_s V e_s) / rms(e): ~0 when head (0, 0) writes, V n(e_t) when not
            model.model.layers[1].self_attn.v_proj.weight[:16, :32] = v
            model.model.layers[1].self_attn.v_proj.weight[:16, 32:48] = -torch.eye(16) * rms_e / c
        model.lm_head.weight.copy_(torch.randn(cfg.vocab_size, 64, generator=g))
    return model


def test_planted_backup_head_repairs_and_no_backup_does_not(bpe_tokenizer):
    results = {}
    for backup in (True, False):
        model = planted_model(bpe_tokenizer, backup)
        tokens = tokens_for(model, n_seq=6, seq_len=24, seed=5)
        res = run_self_repair(Engine(model), tokens, ablation="zero", top_fraction=0.2,
                              batch_size=3, progress=False)
        results[backup] = res.heads.set_index(["layer", "head"]).loc[(0, 0)]
        t = res.tokens
        if not backup:  # nothing after layer 0 reacts: only the final norm can repair
            sub = t[t["layer"] == 0]
            assert sub["sr_attn"].abs().max() < 1e-5 and sub["sr_mlp"].abs().max() < 1e-5
            np.testing.assert_allclose(sub["self_repair"], sub["sr_norm"], atol=1e-5)
    with_backup, without = results[True], results[False]
    assert with_backup["de"] > 0.5
    assert with_backup["sr_attn"] / with_backup["de"] > 0.5, with_backup
    assert with_backup["repair_frac"] > 0.5
    # without the backup head only the final norm's scale repairs (asserted per token above)
    assert abs(without["self_repair"] - without["sr_norm"]) < 1e-5 and abs(without["sr_attn"]) < 1e-6
    assert with_backup["self_repair"] - with_backup["sr_norm"] > 0.5 * with_backup["de"]


def test_last_layer_has_only_final_norm_repair(bpe_tokenizer):
    """Heads of the last layer have no later attention layer. With a parallel block
    (GPT-NeoX) the last MLP does not see them either: self-repair is the final norm's
    alone, and not zero. With a sequential block (Llama) the last MLP still reacts."""
    for arch in ("gpt_neox", "llama"):
        model = tiny_hf_model(arch, bpe_tokenizer, seed=6)
        res = run_self_repair(Engine(model), tokens_for(model), ablation="mean", top_fraction=0.2,
                              batch_size=3, progress=False)
        last = res.tokens[res.tokens.layer == res.tokens.layer.max()]
        assert last["sr_attn"].abs().max() < 1e-5
        if arch == "gpt_neox":
            assert model.config.use_parallel_residual
            assert last["sr_mlp"].abs().max() < 1e-6
            np.testing.assert_allclose(last["self_repair"], last["sr_norm"], atol=1e-5)
        else:
            assert last["sr_mlp"].abs().mean() > 1e-4
        assert last["sr_norm"].abs().mean() > 1e-5


def test_anti_erasure_neurons_sum_to_mlp_repair(bpe_tokenizer):
    """Every neuron's repair, summed over all later neurons, is the MLP part of the
    self-repair on the head's top tokens."""
    model = tiny_hf_model("llama", bpe_tokenizer, seed=7)
    d_mlp = model.config.intermediate_size
    n = model.config.num_hidden_layers
    res = run_self_repair(Engine(model), tokens_for(model), ablation="mean", top_fraction=0.3,
                          n_top_neurons=(n) * d_mlp, batch_size=3, progress=False)
    total = res.neurons.groupby(["layer", "head"])["repair"].sum()
    heads = res.heads.set_index(["layer", "head"])
    np.testing.assert_allclose(total.to_numpy(), heads["sr_mlp"].to_numpy(), atol=1e-5, rtol=1e-4)
    first = res.neurons[res.neurons["rank"] == 0]
    assert (first["neuron_layer"] >= first["layer"]).all()
    assert (res.neurons.groupby(["layer", "head"])["repair"].apply(lambda r: r.is_monotonic_decreasing)).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.no_grad()
def test_final_readout_matches_hand_formula(bpe_tokenizer, arch):
    """core.norms.NormReadout of the final norm: ũ and s as by hand (RMSNorm, LayerNorm)."""
    from stages_of_inference.self_repair.compute import final_readout, target_directions

    model = tiny_hf_model(arch, bpe_tokenizer, seed=8)
    tokens = tokens_for(model)
    clean = HandRun(model, arch, tokens)
    x = clean.final[:, 1:]
    targets = clean.logits[:, 1:].argmax(-1)
    engine = Engine(model)
    readout = final_readout(engine, x)
    assert readout.kind == ("layernorm(g)" if arch == "gpt2" else "rmsnorm(g)")
    u, s = hand_readout(model, arch, x, targets)
    torch.testing.assert_close(target_directions(engine, readout, targets), u, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(readout.scale(x), s, atol=1e-6, rtol=1e-5)
    # x·ũ / s + const is the model's target logit up to a per-token constant of the target
    # (the norm's bias read by W_U, zero for RMSNorm)
    logit = clean.logits[:, 1:].gather(-1, targets[..., None])[..., 0]
    const = logit - (x * u).sum(-1) / s
    bias = getattr(PARTS[arch][2](model), "bias", None)
    want = (model.lm_head.weight[targets] * bias).sum(-1) if bias is not None else torch.zeros_like(const)
    torch.testing.assert_close(const, want, atol=1e-4, rtol=1e-4)


def test_anti_erasure_neurons_ranks_and_decodes():
    """The per-head top-k of accumulated neuron repair (layers >= the head's), divided by
    the head's number of top tokens; flat indices decoded to (neuron_layer, neuron)."""
    import pandas as pd

    from stages_of_inference.self_repair.compute import anti_erasure_neurons

    n, n_heads, d_mlp = 3, 2, 4
    g = torch.Generator().manual_seed(0)
    acc = torch.randn(n, n_heads, n, d_mlp, generator=g)
    heads = pd.DataFrame([dict(layer=L, head=h, n_top=2 + h, de=1.5 + L, sr_mlp=0.5 - h)
                          for L in range(n) for h in range(n_heads)])
    table = anti_erasure_neurons(acc, heads, k=3)
    assert len(table) == n * n_heads * 3
    for (L, h), rows in table.groupby(["layer", "head"]):
        later = acc[L, h, L:] / (2 + h)  # [n - L, d_mlp]
        want = sorted(((float(later[i, j]), L + i, j) for i in range(n - L) for j in range(d_mlp)), reverse=True)[:3]
        assert rows["rank"].tolist() == [0, 1, 2]
        np.testing.assert_allclose(rows["repair"], [w[0] for w in want], rtol=1e-6)
        assert list(zip(rows["neuron_layer"], rows["neuron"])) == [(w[1], w[2]) for w in want]
        np.testing.assert_allclose(rows["frac_of_de"], rows["repair"] / (1.5 + L), rtol=1e-6)
        np.testing.assert_allclose(rows["frac_of_mlp"], rows["repair"] / (0.5 - h), rtol=1e-6)


def test_self_repair_study_selects_tokens_and_labels_tables(bpe_tokenizer):
    """The rule's study: the first n_sequences x seq_len tokens, the section's settings,
    and the model / n_layers / ablation / target columns; numbers = run_self_repair's."""
    from stages_of_inference.self_repair.compute import TOKEN_COLUMNS, self_repair_study

    model = tiny_hf_model("gpt_neox", bpe_tokenizer, seed=9)
    tokens = tokens_for(model, n_seq=4, seq_len=12)
    settings = dict(n_sequences=3, seq_len=9, ablation="zero", target="next", top_fraction=0.25,
                    n_top_neurons=2, figure_heads=4, batch_size=2)
    engine = Engine(model)
    res = self_repair_study(engine, tokens, 1, "tiny", settings, progress=False)
    want = run_self_repair(engine, tokens[:3, :9], 1, ablation="zero", target="next", top_fraction=0.25,
                           n_top_neurons=2, batch_size=2, progress=False)
    n, n_heads = 4, 4
    assert list(res.tokens.columns) == ["model", *TOKEN_COLUMNS]
    assert len(res.tokens) == n * n_heads * 3 * 7  # positions 1..7: the last has no next token
    assert res.tokens["pos"].max() == 7 and res.tokens["seq"].max() == 2
    assert list(res.heads.columns[:1]) == ["model"] and list(res.heads.columns[-3:]) == ["n_layers", "ablation", "target"]
    assert (res.heads["n_layers"] == n).all() and set(res.heads["ablation"]) == {"zero"}
    assert set(res.heads["target"]) == {"next"}
    assert res.neurons.columns[0] == "model" and len(res.neurons) == n * n_heads * 2
    for got, ref, extra in ((res.tokens, want.tokens, []), (res.heads, want.heads, ["n_layers", "ablation", "target"]),
                            (res.neurons, want.neurons, [])):
        assert set(got["model"]) == {"tiny"}
        assert got.drop(columns=["model", *extra]).equals(ref)
