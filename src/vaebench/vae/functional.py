"""Small numerical helpers shared by the VAE components (pure functions, shapes preserved unless stated)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)
LOG_256 = math.log(256.0)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I_d) summed over the last dim: (..., d) -> (...), nats."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` with ``like``'s device and dtype.

    With a ``generator`` the noise is drawn on the generator's device (so a CPU generator gives the same
    numbers whatever device the model is on) and then moved; without one, torch's global RNG is used.
    """
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) noise shaped like ``x`` (float32, on x's device); drawn on the generator's device if given."""
    if generator is None:
        return torch.rand(x.shape, device=x.device)
    return torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)


def softclip(x: torch.Tensor, min_value: float) -> torch.Tensor:
    """Soft lower clip ``min + softplus(x - min)`` (Chua et al. 2018, "Deep Reinforcement Learning in a
    Handful of Trials", appendix A.1; used on log sigma by Rybkin et al. 2021, Section 3.1).

    Smooth, increasing, never below ``min_value`` and ~x for x >> min. Shape preserved.
    Test vectors: softclip(0, -6) = 0.002476, softclip(-10, -6) = -5.98185.
    """
    return min_value + F.softplus(x - min_value)


def log1m_tanh_sq(a: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(a)^2) without cancellation, for the AR(1) posterior with rho = tanh(a).

    1 - tanh(a)^2 = sech(a)^2 = 4 e^{-2|a|} / (1 + e^{-2|a|})^2, so
    log(1 - tanh(a)^2) = 2 [log 2 - |a| - softplus(-2|a|)]: finite for every real a (about -2|a| for
    large |a|, where the naive form gives -inf). Shape preserved.
    """
    a = a.abs()
    return 2.0 * (LOG_2 - a - F.softplus(-2.0 * a))


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum_i exp(log_w_i) along ``dim`` (k = size of that dim), computed with logsumexp.

    With ``log_w`` (k, B) of importance log-weights this is the L_k estimate per image (Burda et al. 2016,
    "Importance Weighted Autoencoders", eq. 8); with k identical values a it returns a.
    """
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
