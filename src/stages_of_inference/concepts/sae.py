"""A small sparse autoencoder (SAE) trainer in plain torch.

Why not ``sae-lens``: sae-lens 6.54.12 (the newest on PyPI when this was written) pins
``transformer-lens<4.0.0``; installing it into our environment would downgrade
transformer-lens 4.3.0 to 3.9.0 and break the package's TransformerLens 4 bridge (core.models, the tests' reference)
(``pip install --dry-run sae-lens`` in the project venv: "Would install ...
transformer-lens-3.9.0"). In a throwaway venv it installs, and its ``SAETrainer`` does
accept a plain iterator of activation tensors (``data_provider``), so the pin is the only
blocker; switch to it when a release allows transformer-lens 4. Meanwhile the SAE here is
~200 lines of torch, tested on synthetic data with known sparse directions
(tests/concepts/test_sae.py).

The model (Bricken et al. 2023; Gao et al. 2024 for TopK):

    f = act((x - b_dec) W_enc + b_enc)        x_hat = f W_dec + b_dec

with ``act`` = TopK (keep the k largest pre-activations, ReLU them; default) or ReLU with an
L1 penalty ``l1_coeff * sum_i f_i`` (decoder rows are unit norm, so the penalty is the
norm-weighted one of Anthropic's April 2024 update). Decoder rows are renormalised to unit
norm after every step. ``W_enc`` is initialised as ``W_dec^T`` and ``b_dec`` as the data
mean. TopK SAEs also get the AuxK loss (Gao et al.): the residual error is reconstructed
from the ``aux_k`` largest pre-activations of *dead* features (no activation in the last
``dead_tokens`` training tokens), weighted by ``aux_coeff``, which revives dead features.

Inputs are scaled by one constant so that the mean squared norm of a token's activation is
``d_in`` (``input_scale``, stored with the SAE), so hyperparameters do not depend on the
model's residual norm. Quality, on held-out tokens: *explained variance*
``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, *L0* (mean number of active features
per token) and *dead features* (never active on any training or held-out token).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .settings import SAE_KINDS as KINDS
from .settings import SAESettings

log = logging.getLogger(__name__)


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    kind: str = "topk"
    k: int = 32                 # TopK: active features per token
    l1_coeff: float = 5e-3      # ReLU: L1 penalty on feature activations (inputs scaled)
    aux_k: int = 64             # TopK: AuxK features for dead-feature revival (0 = off)
    aux_coeff: float = 1 / 32
    dead_tokens: int = 4096     # a feature inactive for this many training tokens is dead
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 8
    seed: int = 0
    input_scale: float = 1.0
    log_every: int = 20

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"SAE kind is {self.kind!r}; use one of {', '.join(KINDS)}.")
        if self.kind == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"TopK SAE: k={self.k} must be in 1..d_sae={self.d_sae}.")

    def to_dict(self) -> dict:
        return asdict(self)


class SparseAutoencoder(torch.nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w_dec)
        self.W_enc = torch.nn.Parameter(w_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_in))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "relu":
            return torch.relu(pre)
        values, indices = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations of *scaled* inputs ``x`` [..., d_in] -> [..., d_sae]."""
        return self.activate(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor):
        f = self.encode(x)
        return f, self.decode(f)

    def features(self, residual: torch.Tensor) -> torch.Tensor:
        """Feature activations of unscaled residual-stream vectors (what analyses call)."""
        return self.encode(residual * self.cfg.input_scale)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)

    # -- (de)serialisation: tensors via safetensors, the config as JSON ---------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, cfg: SAEConfig, tensors: dict[str, torch.Tensor]) -> "SparseAutoencoder":
        sae = cls(cfg)
        sae.load_state_dict(tensors)
        return sae.eval()


def sparse_decode(w_dec: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``sum_j values[b, j] * w_dec[indices[b, j]]`` (no decoder bias): [B, k] -> [B, d_in]."""
    return torch.einsum("bk,bkd->bd", values, w_dec[indices])


def input_scale(x: torch.Tensor) -> float:
    """The constant that makes the mean squared norm of rows of ``x`` equal to d_in."""
    return float(math.sqrt(x.shape[1] / x.pow(2).sum(dim=1).mean().clamp(min=1e-12)))


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> dict:
    """Explained variance, MSE, L0 and per-feature firing counts on scaled inputs ``x``."""
    err = 0.0
    l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae)
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        f, x_hat = sae(xb)
        err += float((xb - x_hat).pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        fired += active.sum(dim=0).float()
    total = float((x - x.mean(dim=0)).pow(2).sum())
    return {
        "explained_variance": 1.0 - err / max(total, 1e-12),
        "mse": err / x.numel(),
        "l0": l0 / len(x),
        "fired": fired,
    }


@dataclass
class TrainResult:
    sae: SparseAutoencoder
    history: list[dict] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    firing_rate: torch.Tensor | None = None


def train_sae(x: torch.Tensor, cfg: SAEConfig, x_val: torch.Tensor | None = None,
              progress: bool = True) -> TrainResult:
    """Train on rows of ``x`` [n, d_in] (already multiplied by ``cfg.input_scale``).

    Returns the SAE (eval mode), the logged training curve (one dict per ``log_every``
    steps) and the final quality on the training rows and on ``x_val``.
    """
    torch.manual_seed(cfg.seed)
    x = x.float()
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(dim=0))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    n = len(x)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    since_fired = torch.zeros(cfg.d_sae)
    g = torch.Generator().manual_seed(cfg.seed)
    history = []
    step = 0
    sae.train()
    with torch.enable_grad():
        for epoch in tqdm(range(cfg.epochs), desc="SAE epochs", disable=not progress):
            order = torch.randperm(n, generator=g)
            for i in range(0, n, cfg.batch_size):
                xb = x[order[i : i + cfg.batch_size]]
                pre = sae.pre_acts(xb)
                if cfg.kind == "topk":
                    # sparse decode: gather the k active decoder rows instead of a dense
                    # [B, d_sae] @ [d_sae, d_in] product (same result, ~d_sae/k times cheaper)
                    values, indices = pre.topk(cfg.k, dim=-1)
                    acts = torch.relu(values)
                    x_hat = sparse_decode(sae.W_dec, acts, indices) + sae.b_dec
                    f_active = torch.zeros(cfg.d_sae, dtype=torch.bool)
                    f_active[indices[acts > 0]] = True
                else:
                    f = sae.activate(pre)
                    x_hat = sae.decode(f)
                    f_active = (f > 0).any(dim=0)
                err = xb - x_hat
                mse = err.pow(2).sum(dim=1).mean()
                loss = mse
                aux = torch.zeros(())
                if cfg.kind == "relu":
                    l1 = f.sum(dim=1).mean()
                    loss = loss + cfg.l1_coeff * l1
                dead = since_fired >= cfg.dead_tokens
                if cfg.kind == "topk" and cfg.aux_k and dead.any():
                    k_aux = min(cfg.aux_k, int(dead.sum()))
                    dead_pre = pre.masked_fill(~dead, float("-inf"))
                    aux_values, aux_indices = dead_pre.topk(k_aux, dim=-1)
                    err_hat = sparse_decode(sae.W_dec, torch.relu(aux_values), aux_indices)
                    aux = (err.detach() - err_hat).pow(2).sum(dim=1).mean()
                    loss = loss + cfg.aux_coeff * aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                # remove the gradient component parallel to each decoder row (it would
                # only change the norm that normalize_decoder resets)
                with torch.no_grad():
                    w = sae.W_dec
                    w.grad -= (w.grad * w).sum(dim=1, keepdim=True) * w
                opt.step()
                sae.normalize_decoder()
                with torch.no_grad():
                    since_fired += len(xb)
                    since_fired[f_active] = 0
                if step % cfg.log_every == 0 or step == total_steps - 1:
                    with torch.no_grad():
                        var = (xb - xb.mean(dim=0)).pow(2).sum()
                        history.append({
                            "step": step,
                            "epoch": epoch,
                            "tokens_seen": (step + 1) * cfg.batch_size,
                            "loss": float(loss),
                            "mse": float(mse) / cfg.d_in,
                            "aux_loss": float(aux),
                            "explained_variance": 1.0 - float(err.pow(2).sum()) / max(float(var), 1e-12),
                            "l0": float((acts > 0).sum(dim=1).float().mean()) if cfg.kind == "topk"
                            else float((f > 0).sum(dim=1).float().mean()),
                            "dead": int((since_fired >= cfg.dead_tokens).sum()),
                        })
                step += 1
    sae.eval()
    train_q = evaluate(sae, x)
    quality = {
        "train_explained_variance": train_q["explained_variance"],
        "train_mse": train_q["mse"],
        "train_l0": train_q["l0"],
        "n_train_tokens": n,
        "steps": total_steps,
    }
    fired = train_q["fired"]
    n_eval = n
    if x_val is not None and len(x_val):
        val_q = evaluate(sae, x_val.float())
        quality.update(
            val_explained_variance=val_q["explained_variance"],
            val_mse=val_q["mse"],
            val_l0=val_q["l0"],
            n_val_tokens=len(x_val),
        )
        fired = fired + val_q["fired"]
        n_eval += len(x_val)
    quality["dead_features"] = int((fired == 0).sum())
    quality["dead_fraction"] = quality["dead_features"] / cfg.d_sae
    log.info("SAE (%s, d_sae=%d): %s", cfg.kind, cfg.d_sae,
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in quality.items()))
    return TrainResult(sae=sae, history=history, quality=quality, firing_rate=fired / n_eval)


# -- the study's SAE: outliers out, a held-out split, the config from concepts.sae ----------
def drop_outliers(x: torch.Tensor, outlier_norm: float) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` whose norm is at most ``outlier_norm`` x the median norm (0 keeps all),
    and how many were dropped. "Massive activations": a few positions (e.g. after an EOS
    separator) have residual norms ~100x the median; they would dominate the input scale
    and the explained variance."""
    norms = x.norm(dim=1)
    limit = float(outlier_norm) * float(norms.median())
    keep = norms <= limit if outlier_norm else torch.ones(len(x), dtype=torch.bool)
    n_dropped = int((~keep).sum())
    log.info("%d of %d tokens dropped as outliers (norm > %.0f = %g x median; largest %.0f)", n_dropped, len(x),
             limit, outlier_norm, float(norms.max()))
    return x[keep], n_dropped


def holdout_split(x: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows): a seeded random ``fraction`` of the rows held out."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(x), generator=g)
    n_val = int(round(fraction * len(x)))
    return x[order[n_val:]], x[order[:n_val]]


def sae_config(settings: SAESettings, d_in: int, scale: float) -> SAEConfig:
    """The SAEConfig of ``concepts.sae`` for inputs of width ``d_in`` scaled by ``scale``."""
    return SAEConfig(d_in=d_in, d_sae=int(settings.expansion) * d_in, kind=settings.kind, k=settings.k,
                     l1_coeff=settings.l1_coeff, aux_k=settings.aux_k, dead_tokens=settings.dead_tokens,
                     lr=settings.lr, batch_size=int(settings.batch_size_tokens), epochs=settings.epochs,
                     seed=settings.seed, input_scale=scale)


@dataclass
class SAEFit:
    result: TrainResult
    config: SAEConfig
    outliers_dropped: int
    seconds: float


def fit_sae(residuals: torch.Tensor, settings: SAESettings, progress: bool = True) -> SAEFit:
    """Train the study's SAE on residual vectors [N, d]: outliers dropped, a held-out
    split for quality, inputs scaled by the training rows' :func:`input_scale`."""
    x, n_outliers = drop_outliers(residuals.float(), settings.outlier_norm)
    x_train, x_val = holdout_split(x, settings.holdout_fraction, settings.seed)
    scale = input_scale(x_train)
    cfg = sae_config(settings, x.shape[1], scale)
    t0 = time.perf_counter()
    result = train_sae(x_train * scale, cfg, x_val=x_val * scale, progress=progress)
    return SAEFit(result=result, config=cfg, outliers_dropped=n_outliers, seconds=time.perf_counter() - t0)


def sae_tables(model: str, fit: SAEFit) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The training curve, the one-row quality table and the per-feature firing rates."""
    cfg = fit.config
    history = pd.DataFrame(fit.result.history)
    history.insert(0, "model", model)
    quality = pd.DataFrame([{"model": model, "kind": cfg.kind, "d_in": cfg.d_in, "d_sae": cfg.d_sae,
                             "k": cfg.k if cfg.kind == "topk" else None, "epochs": cfg.epochs,
                             "train_seconds": fit.seconds, "outlier_tokens_dropped": fit.outliers_dropped,
                             **fit.result.quality}])
    features = pd.DataFrame({"model": model, "feature": np.arange(cfg.d_sae),
                             "firing_rate": fit.result.firing_rate.numpy()})
    return history, quality, features
