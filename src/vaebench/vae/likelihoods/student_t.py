"""Student-t decoder on dequantised data y = (x_uint8 + u)/256 (Takahashi, Iwata, Yamanaka, Yamada, Yagi, IJCAI
2018, the Student-t row of Rybkin et al. 2021, Table 2). -log p(y) + D ln 256 bounds the 8-bit NLL (Theis et al.
2016, Section 3.1)."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from vaebench.registry import LIKELIHOODS, ComponentConfig
from vaebench.vae.functional import LOG_256, rand_like, softclip
from vaebench.vae.likelihoods import Likelihood, check_uint8, split_channels

LOG_PI = math.log(math.pi)


def log_normaliser(nu: torch.Tensor) -> torch.Tensor:
    """lgamma((nu+1)/2) - lgamma(nu/2) - log(nu pi)/2, nats, shape and dtype of ``nu`` (computed in float64)."""
    n = nu.double()
    return (torch.lgamma(0.5 * (n + 1.0)) - torch.lgamma(0.5 * n) - 0.5 * (torch.log(n) + LOG_PI)).to(nu.dtype)


def student_t_log_density(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                          nu: torch.Tensor) -> torch.Tensor:
    """log St(x | loc, s = exp(log_scale), nu) per element, nats: lgamma((nu+1)/2) - lgamma(nu/2) - log(nu pi)/2
    - log s - (nu+1)/2 log1p(((x - loc)/s)^2 / nu) (TFP ``StudentT``); the arguments broadcast."""
    z = (x - loc) * torch.exp(-log_scale)
    return log_normaliser(nu) - log_scale - 0.5 * (nu + 1.0) * torch.log1p(z * z / nu)


def standard_t(nu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws of the standard Student-t with ``nu`` degrees of freedom, one per element of ``nu`` (same shape,
    dtype, device): Bailey's polar method (Math. Comp. 62, 1994), T = U sqrt(nu (W^(-2/nu) - 1) / W) for (U, V)
    uniform on the unit disc, W = U^2 + V^2 (rejection, rounds until every element is accepted)."""
    out = torch.zeros_like(nu)
    todo = torch.ones(nu.shape, dtype=torch.bool, device=nu.device)
    while bool(todo.any()):
        u = 2.0 * rand_like(nu, generator).to(nu.dtype) - 1.0
        v = 2.0 * rand_like(nu, generator).to(nu.dtype) - 1.0
        w = u * u + v * v
        ok = todo & (w > 0) & (w < 1)
        w = torch.where(ok, w, torch.full_like(w, 0.5))
        out = torch.where(ok, u * torch.sqrt(nu * torch.expm1(-2.0 / nu * torch.log(w)) / w), out)
        todo = todo & ~ok
    return out


@LIKELIHOODS.register
class StudentT(Likelihood):
    """Student-t per sub-pixel (Takahashi et al. 2018) on dequantised data (B, C, H, W) in [0, 1). Per pixel: the
    location mu = sigmoid(output group 0) and the scale s, log s = softclip(output group 1, log_sigma_min). Degrees
    of freedom nu = nu_min + softplus(a): ``dof: shared``, one learned scalar ``a`` (an nn.Parameter, float32, init
    0) for all pixels (out_channels = 2); ``dof: per_pixel``, ``a`` from output group 2 (out_channels = 3). Log
    density: ``student_t_log_density`` summed over C, H, W (nats/image). s is not the standard deviation (Var =
    s^2 nu/(nu-2) for nu > 2). ``mean`` is the location mu; ``draw`` is mu + s T, T ~ St(nu), clamped to [0, 1].
    Which of mu, s, nu the sigma-VAE paper's Student-t decoder outputs per pixel is not stated in its retrieved
    text (methods.md 9.1). Raises ValueError for nu_min <= 0 or an unknown ``dof``."""

    name = "student_t"
    family = "student_t"
    sigma_mode = "per_pixel"
    data_space = "dequantised"
    description = "Student-t, per-pixel location and scale, learned degrees of freedom (shared or per pixel)"

    class Config(ComponentConfig):
        log_sigma_min: float = Field(-6.0, description="Soft lower clip of the log scale log s (nats).")
        dof: Literal["shared", "per_pixel"] = Field(
            "shared", description="Degrees of freedom nu: one learned scalar for all pixels, or one per sub-pixel "
                                  "from a third decoder output group.")
        nu_min: float = Field(2.0, gt=0, description="Lower bound of nu = nu_min + softplus(a); 2 keeps the "
                                                     "variance s^2 nu/(nu-2) finite.")

    def __init__(self, log_sigma_min: float = -6.0, dof: str = "shared", nu_min: float = 2.0):
        super().__init__()
        if dof not in ("shared", "per_pixel"):
            raise ValueError(f"likelihood.dof: must be 'shared' or 'per_pixel', got {dof!r}")
        if not nu_min > 0:
            raise ValueError(f"likelihood.nu_min: must be > 0, got {nu_min!r}")
        self.log_sigma_min, self.dof, self.nu_min = float(log_sigma_min), dof, float(nu_min)
        self.out_channels = 2 if dof == "shared" else 3
        if dof == "shared":
            self.raw_dof = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def preprocess(self, x_uint8, generator=None):
        check_uint8(x_uint8)
        return (x_uint8.float() + rand_like(x_uint8, generator)) / 256.0

    def discrete_offset_nats(self, D):
        return D * LOG_256

    def params(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, log s, nu) of decoder output (*S, out_channels*C, H, W): mu and log s (*S, C, H, W), nu () for
        ``dof: shared`` else (*S, C, H, W); in ``out``'s dtype."""
        groups = split_channels(out, self.out_channels)
        mu = torch.sigmoid(groups[..., 0, :, :, :])
        log_s = softclip(groups[..., 1, :, :, :], self.log_sigma_min)
        raw = self.raw_dof.to(out.dtype) if self.dof == "shared" else groups[..., 2, :, :, :]
        return mu, log_s, self.nu_min + F.softplus(raw)

    def log_prob(self, x, out, accumulate=False):
        mu, log_s, nu = self.params(out)
        return student_t_log_density(x, mu, log_s, nu).sum((-3, -2, -1))

    def mean(self, out):
        return torch.sigmoid(split_channels(out, self.out_channels)[..., 0, :, :, :])

    def draw(self, out, generator=None):
        mu, log_s, nu = self.params(out)
        t = standard_t(nu.expand_as(mu).contiguous(), generator)
        return (mu + torch.exp(log_s) * t).clamp(0.0, 1.0)

    def tracked_scalars(self):
        if self.dof != "shared":
            return {}
        return {"nu": float(self.nu_min + F.softplus(self.raw_dof.detach().double()))}
