"""Norm layers read as a linear map with a frozen scale.

Every norm the workflow meets is ``norm(x) = g ⊙ c(x) / s(x) + b``: ``c`` centres over
``d_model`` for LayerNorm (identity for RMSNorm), ``s(x)`` is the per-token scale
(LayerNorm ``sqrt(var x + eps)``, RMSNorm ``sqrt(mean x² + eps)``), ``g`` the effective gain
(the weight, or ``1 + weight`` for Gemma's offset RMSNorm) and ``b`` a bias (LayerNorm).
With ``s`` frozen at a clean run's value the norm is linear, which is what direct
effects and logit-lens read-outs need (self-repair, the final norm's share).

:class:`NormReadout` reads ``g``, ``eps``, the centring and ``b`` off a norm module and
checks them against the module on probe inputs: a norm that the formula does not
reproduce is refused, never silently misread.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _eps(norm) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise ValueError(f"Cannot read eps of the norm {type(norm).__name__}.")


def _is_offset(norm) -> bool:
    """Gemma-style RMSNorm: the weight is stored as an offset and applied as ``1 + w``."""
    return "Gemma" in type(norm).__name__ and "RMSNorm" in type(norm).__name__


def norm_gain(norm, d: int) -> torch.Tensor:
    """The effective gain ``g`` of ``norm`` ([d], detached): its weight, ``1 + weight``
    for Gemma's offset RMSNorm, ones if it has none."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        return torch.ones(d)
    weight = weight.detach()
    return weight + 1.0 if _is_offset(norm) else weight


@dataclass
class NormReadout:
    """``norm(x) = g ⊙ c(x) / s(x) + b`` (module docstring)."""

    centre: bool          # LayerNorm: subtract the mean (linear, folded into directions)
    gain: torch.Tensor    # [d] effective gain
    bias: torch.Tensor | float
    eps: float
    kind: str

    @classmethod
    def from_module(cls, norm: torch.nn.Module, probe: torch.Tensor) -> "NormReadout":
        """Read ``norm``'s parameters and check them on ``probe`` ([..., d] inputs): the
        formula must reproduce the module, or this raises."""
        d = probe.shape[-1]
        x = probe.reshape(-1, d)[:64]
        with torch.no_grad():
            want = norm(x).float()
        eps = _eps(norm)
        weight = getattr(norm, "weight", None)
        weight = torch.ones(d, device=probe.device) if weight is None else weight.detach().float()
        bias = getattr(norm, "bias", None)
        bias = 0.0 if bias is None else bias.detach().float()
        centre = isinstance(norm, torch.nn.LayerNorm)
        tol = 1e-4 if probe.dtype == torch.float32 else 2e-2
        tried = []
        offset, plain = (weight + 1.0, "1+g"), (weight, "g")
        candidates = [offset, plain] if _is_offset(norm) else [plain, offset]
        for gain, label in candidates:
            readout = cls(centre=centre, gain=gain, bias=bias, eps=eps,
                          kind=("layernorm" if centre else "rmsnorm") + f"({label})")
            got = readout(x.float())
            tried.append(readout.kind)
            if torch.allclose(got, want, atol=tol * max(1.0, want.abs().max().item()), rtol=tol):
                return readout
        raise ValueError(
            f"The norm {type(norm).__name__} is neither LayerNorm nor RMSNorm "
            f"(tried {', '.join(tried)}); it cannot be read as a frozen-scale linear map."
        )

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``s(x)`` per token: ``[...]``."""
        x = x.float()
        if self.centre:
            return torch.sqrt(x.var(-1, unbiased=False) + self.eps)
        return torch.sqrt(x.pow(2).mean(-1) + self.eps)

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x - x.mean(-1, keepdim=True) if self.centre else x

    def normalise(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``g ⊙ c(x) / s`` without the bias, with ``s`` = ``scale`` (frozen) or ``s(x)``."""
        s = self.scale(x) if scale is None else scale
        return self.centred(x) / s[..., None] * self.gain

    def __call__(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalise(x, scale) + self.bias

    def directions(self, rows: torch.Tensor) -> torch.Tensor:
        """Read-out directions ``ũ`` with ``rows · norm(x) = x · ũ / s(x) + rows · b``:
        ``g ⊙ rows``, centred over ``d`` for LayerNorm (the centring is linear and
        symmetric). ``rows``: ``[..., d]``."""
        u = rows.float() * self.gain
        if self.centre:
            u = u - u.mean(-1, keepdim=True)
        return u
