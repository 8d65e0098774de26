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


def test_drop_outliers_by_median_norm():
    from stages_of_inference.concepts.sae import drop_outliers

    x = torch.ones(9, 4)  # norm 2
    x[3] *= 30            # norm 60 > 10 x 2
    x[5] *= 10            # norm 20 = 10 x 2: kept
    kept, n = drop_outliers(x, 10)
    assert n == 1 and len(kept) == 8 and torch.equal(kept, torch.cat([x[:3], x[4:]]))
    kept, n = drop_outliers(x, 0)  # 0 keeps all
    assert n == 0 and torch.equal(kept, x)


def test_holdout_split_seeded_and_disjoint():
    from stages_of_inference.concepts.sae import holdout_split

    x = torch.arange(50.0)[:, None]
    train, val = holdout_split(x, 0.1, seed=0)
    assert len(val) == 5 and len(train) == 45
    assert sorted(torch.cat([train, val]).flatten().tolist()) == x.flatten().tolist()
    again, _ = holdout_split(x, 0.1, seed=0)
    assert torch.equal(train, again)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(val, x[order[:5]])
    assert not torch.equal(holdout_split(x, 0.1, seed=1)[1], val)


def test_sae_config_from_settings():
    from stages_of_inference.concepts.sae import sae_config
    from stages_of_inference.concepts.settings import SAESettings

    s = SAESettings.from_config({"expansion": 3, "kind": "relu", "k": 4, "l1_coeff": 0.1, "aux_k": 2,
                                 "dead_tokens": 99, "epochs": 5, "batch_size_tokens": 64, "lr": 0.01, "seed": 7})
    cfg = sae_config(s, d_in=16, scale=0.5)
    assert cfg == SAEConfig(d_in=16, d_sae=48, kind="relu", k=4, l1_coeff=0.1, aux_k=2, dead_tokens=99, epochs=5,
                            batch_size=64, lr=0.01, seed=7, input_scale=0.5)
    # the defaults: concepts.sae's defaults give SAEConfig's own
    assert sae_config(SAESettings(), 16, 1.0) == SAEConfig(d_in=16, d_sae=32)


def test_fit_sae_and_its_tables():
    from stages_of_inference.concepts.sae import fit_sae, holdout_split, sae_config, sae_tables
    from stages_of_inference.concepts.settings import SAESettings

    x, _ = synthetic(n=600)
    x[10] *= 100  # one massive activation
    s = SAESettings.from_config({"k": 4, "epochs": 2, "batch_size_tokens": 128, "holdout_fraction": 0.2})
    fit = fit_sae(x, s, progress=False)
    assert fit.outliers_dropped == 1
    kept = torch.cat([x[:10], x[11:]])
    train, val = holdout_split(kept, 0.2, seed=0)
    assert fit.config == sae_config(s, 32, input_scale(train))
    ref = train_sae(train * fit.config.input_scale, fit.config, x_val=val * fit.config.input_scale, progress=False)
    assert torch.equal(ref.sae.W_dec, fit.result.sae.W_dec)
    history, quality, features = sae_tables("m", fit)
    assert list(history.columns[:2]) == ["model", "step"] and len(history) == len(fit.result.history)
    q = quality.iloc[0]
    assert (q["model"], q["kind"], q["d_in"], q["d_sae"], q["k"], q["epochs"]) == ("m", "topk", 32, 64, 4, 2)
    assert q["outlier_tokens_dropped"] == 1 and q["n_train_tokens"] == len(train) and q["n_val_tokens"] == len(val)
    assert features["feature"].tolist() == list(range(64))
    assert torch.equal(torch.tensor(features["firing_rate"].to_numpy()), fit.result.firing_rate.double())
