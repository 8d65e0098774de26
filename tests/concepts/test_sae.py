import math

import pytest
import torch

from stages_of_inference.concepts.sae import SAEConfig, SparseAutoencoder, evaluate, input_scale, train_sae


def synthetic(n=8192, d=32, n_true=24, active=3, seed=7):
    """Activations that are sparse non-negative combinations of known unit directions.
    (The seed differs from the SAE's init seed: the same generator seed would make the
    SAE's initial decoder rows equal to the true directions.)"""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_true, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    coef = torch.zeros(n, n_true)
    idx = torch.rand(n, n_true, generator=g).argsort(dim=1)[:, :active]
    coef.scatter_(1, idx, torch.rand(n, active, generator=g) * 2 + 0.5)
    x = coef @ dirs + 0.01 * torch.randn(n, d, generator=g)
    return x, dirs


def max_cosines(sae, dirs):
    w = sae.W_dec.detach()
    w = w / w.norm(dim=1, keepdim=True)
    return (dirs @ w.T).max(dim=1).values


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_sae_recovers_planted_directions(kind):
    x, dirs = synthetic(n=8192)
    scale = input_scale(x)
    cfg = SAEConfig(d_in=32, d_sae=64, kind=kind, k=4, l1_coeff=0.3, epochs=20 if kind == "topk" else 30,
                    batch_size=256, lr=1e-2 if kind == "topk" else 3e-3, dead_tokens=2048, input_scale=scale)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster on a shared CPU
    try:
        res = train_sae(x[:7000] * scale, cfg, x_val=x[7000:] * scale, progress=False)
    finally:
        torch.set_num_threads(threads)
    cos = max_cosines(res.sae, dirs)
    assert (cos > 0.9).all(), cos
    # a random decoder does not: the test can fail
    assert (max_cosines(SparseAutoencoder(cfg), dirs) < 0.9).any()
    assert res.quality["val_explained_variance"] > 0.9
    assert res.quality["val_l0"] <= (4 if kind == "topk" else 12)


def test_evaluate_matches_hand_formulas():
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=8, d_sae=16, kind="topk", k=3)
    sae = SparseAutoencoder(cfg).eval()
    x = torch.randn(50, 8)
    q = evaluate(sae, x, batch_size=7)
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        f = torch.zeros_like(pre)
        for i in range(len(x)):
            top = pre[i].argsort(descending=True)[:3]
            f[i, top] = pre[i, top].clamp(min=0)
        x_hat = f @ sae.W_dec + sae.b_dec
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert math.isclose(q["explained_variance"], float(ev), rel_tol=1e-5)
    assert math.isclose(q["l0"], float((f > 0).sum(1).float().mean()), rel_tol=1e-6)
    assert torch.equal(q["fired"], (f > 0).sum(0).float())


def test_decoder_rows_stay_unit_norm_and_scale():
    x, _ = synthetic(n=1024)
    s = input_scale(x)
    assert math.isclose(float((x * s).pow(2).sum(1).mean()), 32.0, rel_tol=1e-4)
    res = train_sae(x * s, SAEConfig(d_in=32, d_sae=48, k=4, epochs=2, input_scale=s), progress=False)
    norms = res.sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert torch.allclose(res.sae.features(x[:5]), res.sae.encode(x[:5] * s))


def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = SAEConfig(d_in=8, d_sae=16, k=2, seed=3)
    sae = SparseAutoencoder(cfg)
    save_file(sae.state_tensors(), tmp_path / "sae.safetensors")
    back = SparseAutoencoder.from_tensors(SAEConfig(**cfg.to_dict()), load_file(tmp_path / "sae.safetensors"))
    x = torch.randn(4, 8)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_sparse_decode_matches_dense():
    from stages_of_inference.concepts.sae import sparse_decode

    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, k=3))
    x = torch.randn(5, 8)
    pre = sae.pre_acts(x)
    values, indices = pre.topk(3, dim=-1)
    dense = sae.decode(sae.activate(pre))
    torch.testing.assert_close(sparse_decode(sae.W_dec, torch.relu(values), indices) + sae.b_dec, dense)
