"""The core engine's block edits and hooks against plain ``transformers`` forward passes
with hand-placed PyTorch hooks (no engine code on the reference side)."""
import copy

import pytest
import torch

from stages_of_inference.core.engine import Engine, parse_hook_name

from conftest import tiny_hf_model

ARCHS = ("llama", "gpt2", "gpt_neox", "gemma3_text")


def modules(hf, arch, layer):
    """(attention output projection, the module whose output the MLP adds to the residual
    stream, MLP down projection) of one block, by each architecture's own attribute names.
    Gemma's MLP write is its post-feedforward norm's output (sandwich norms)."""
    if arch == "gemma3_text":
        block = hf.model.layers[layer]
        return block.self_attn.o_proj, block.post_feedforward_layernorm, block.mlp.down_proj
    if arch == "llama":
        block = hf.model.layers[layer]
        return block.self_attn.o_proj, block.mlp, block.mlp.down_proj
    if arch == "gpt2":
        block = hf.transformer.h[layer]
        return block.attn.c_proj, block.mlp, block.mlp.c_proj
    block = hf.gpt_neox.layers[layer]
    return block.attention.dense, block.mlp, block.mlp.dense_4h_to_h


def reference_logits(hf, arch, ids, layer, head=None, mlp_zero=False, n_heads=4):
    """Full forward pass of the plain model with head ``head`` of ``layer`` zeroed at the
    output projection's input, or the MLP output of ``layer`` zeroed."""
    o_proj, mlp, _ = modules(hf, arch, layer)
    handles = []
    if head is not None:
        def pre(module, args):
            x = args[0].clone()
            d_head = x.shape[-1] // n_heads
            x[..., head * d_head:(head + 1) * d_head] = 0
            return (x,)
        handles.append(o_proj.register_forward_pre_hook(pre))
    if mlp_zero:
        handles.append(mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out)))
    try:
        with torch.no_grad():
            return hf(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def ids(bpe_tokenizer):
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, len(bpe_tokenizer), (3, 12), generator=g)


@pytest.fixture(scope="module", params=ARCHS)
def model(request, bpe_tokenizer):
    return tiny_hf_model(request.param, bpe_tokenizer), request.param


def test_head_ablation_from_cached_residual_equals_full_forward(model, ids):
    hf, arch = model
    engine = Engine(copy.deepcopy(hf))
    with torch.no_grad():
        engine.baseline(ids)
        for layer in (0, 2):
            for head in (0, 3):
                def zero(z, head=head):
                    z = z.clone()
                    z[:, :, head] = 0
                    return z
                got = engine.run_from(layer, hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
                want = reference_logits(hf, arch, ids, layer, head=head)
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
                # and the ablation matters: the logits moved
                assert (got - engine.run_from(layer)).abs().max() > 1e-3


def test_mlp_ablation_equals_full_forward(model, ids):
    hf, arch = model
    engine = Engine(copy.deepcopy(hf))
    with torch.no_grad():
        engine.baseline(ids)
        got = engine.run_from(1, hooks=[("blocks.1.hook_mlp_out", torch.zeros_like)])
    torch.testing.assert_close(got, reference_logits(hf, arch, ids, 1, mlp_zero=True), atol=1e-4, rtol=1e-4)


def test_repeat_runs_one_variant_per_head(model, ids):
    """repeat=H with head h ablated in variant h == H separate runs."""
    hf, arch = model
    engine = Engine(hf)
    H, B = engine.n_heads, ids.shape[0]

    def zero_own_head(z):
        z = z.clone().view(H, B, *z.shape[1:])
        for h in range(H):
            z[h, :, :, h] = 0
        return z.view(H * B, *z.shape[2:])

    with torch.no_grad():
        engine.baseline(ids)
        batched = engine.run_from(2, hooks=[("blocks.2.attn.hook_z", zero_own_head)], repeat=H)
        assert batched.shape[0] == H * B
        for h in range(H):
            def zero(z, h=h):
                z = z.clone()
                z[:, :, h] = 0
                return z
            single = engine.run_from(2, hooks=[("blocks.2.attn.hook_z", zero)])
            torch.testing.assert_close(batched[h * B:(h + 1) * B], single, atol=1e-5, rtol=1e-5)


def test_captured_components_rebuild_the_outputs(model, ids):
    """hook_z · W_O (per head) + bias == hook_attn_out, and mlp.hook_post · W_out + bias ==
    hook_mlp_out: the weight views have the layout the hooks have."""
    hf, arch = model
    engine = Engine(hf)
    seen = {}

    def keep(name):
        def fn(x):
            seen[name] = x.detach().clone()
        return fn

    names = ["blocks.1.attn.hook_z", "blocks.1.hook_attn_out", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"]
    with torch.no_grad():
        engine.baseline(ids, hooks=[(n, keep(n)) for n in names])
        o_proj, _, down = modules(hf, arch, 1)
        z = seen["blocks.1.attn.hook_z"]
        assert z.shape == (*ids.shape, engine.n_heads, engine.d_head)
        attn = torch.einsum("bthd,hdm->btm", z, engine.head_out_weights(1))
        attn = attn + (o_proj.bias if o_proj.bias is not None else 0)
        mlp = seen["blocks.1.mlp.hook_post"] @ engine.mlp_out_weights(1) + (down.bias if down.bias is not None else 0)
        if arch == "gemma3_text":  # the writes pass the post-norms: (1 + w) x / rms(x), by hand
            block = hf.model.layers[1]

            def rms_norm(x, norm):
                return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight)

            attn = rms_norm(attn, block.post_attention_layernorm)
            mlp = rms_norm(mlp, block.post_feedforward_layernorm)
        torch.testing.assert_close(attn, seen["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mlp, seen["blocks.1.hook_mlp_out"], atol=1e-5, rtol=1e-5)


def test_repeated_block_and_residual_output(model, ids):
    """order=[1, 1, 2, 3] runs block 1 twice: equal to a model whose layer list says so;
    output='both' returns the final residual whose unembedding is the logits."""
    hf, arch = model
    engine = Engine(hf)
    edited = copy.deepcopy(hf)
    holder = getattr(edited, {"llama": "model", "gpt2": "transformer", "gpt_neox": "gpt_neox",
                              "gemma3_text": "model"}[arch])
    name = "h" if arch == "gpt2" else "layers"
    old = getattr(holder, name)
    setattr(holder, name, torch.nn.ModuleList([old[0], old[1], old[1], old[2], old[3]]))
    edited.config.num_hidden_layers = 5
    if hasattr(edited.config, "layer_types"):  # each block keeps its own attention type
        types = edited.config.layer_types
        edited.config.layer_types = [types[0], types[1], types[1], types[2], types[3]]
    with torch.no_grad():
        want = edited(input_ids=ids, use_cache=False).logits
        engine.baseline(ids)
        resid, got = engine.run_from(1, order=[1, 1, 2, 3], output="both")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(engine.unembed(resid), got)


def test_bad_hook_name_names_the_sites():
    with pytest.raises(ValueError, match="hook_z"):
        parse_hook_name("blocks.0.attn.hook_q")
    assert parse_hook_name("blocks.12.hook_mlp_out") == (12, "hook_mlp_out")
