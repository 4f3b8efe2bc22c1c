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
    """Standard normal noise of ``shape`` with ``like``'s device and dtype, drawn on ``generator``'s device."""
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
    """Soft lower clip ``min + softplus(x - min)``, shape preserved (Chua et al. 2018, appendix A.1; Rybkin et
    al. 2021, Section 3.1)."""
    return min_value + F.softplus(x - min_value)


def log1m_tanh_sq(a: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(a)^2) = 2 [log 2 - |a| - softplus(-2|a|)], finite for every real a; shape preserved."""
    a = a.abs()
    return 2.0 * (LOG_2 - a - F.softplus(-2.0 * a))


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum_i exp(log_w_i) along ``dim``: (k, B) log-weights -> (B,) L_k (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def _log_discretised_normal_stable(x_uint8: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log P(x), nats, of 8-bit ``x`` (integer, 0..255) under N(mean, sigma^2) discretised into 256 bins, edge bins
    open (Salimans et al. 2017, PixelCNN++, eq. 2); ``x``, ``mean`` ([0, 1] scale, float) and ``log_sigma``
    broadcast, the result in ``mean``'s dtype. Raises ValueError on a non-integer or out-of-range ``x`` or a
    non-float ``mean``."""
    if x_uint8.is_floating_point() or x_uint8.is_complex() or x_uint8.dtype == torch.bool:
        raise ValueError(f"log_discretised_normal: x must be an integer tensor of 0..255, got dtype {x_uint8.dtype}")
    if x_uint8.dtype != torch.uint8 and x_uint8.numel():
        lo, hi = int(x_uint8.min()), int(x_uint8.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"log_discretised_normal: x must be in 0..255, got values in {lo}..{hi}")
    if not mean.is_floating_point():
        raise ValueError(f"log_discretised_normal: mean must be a float tensor, got dtype {mean.dtype}")
    out_dtype = mean.dtype
    dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    mean = mean.to(dtype)
    log_sigma = torch.as_tensor(log_sigma, device=mean.device).to(dtype).clamp(-30.0, 30.0)
    x = x_uint8.to(device=mean.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    z_max = 1e18

    inv_sigma = torch.exp(-log_sigma)
    zc = ((x + 0.5) / 256.0 - mean) * inv_sigma
    d = inv_sigma / 512.0
    zc, d = torch.broadcast_tensors(zc, d)

    t = -zc.abs().clamp(max=z_max)
    hi, lo = t + d, t - d
    log_phi_hi = torch.special.log_ndtr(hi)
    r = 1.0 / math.sqrt(2.0)
    # Delta = log Phi(hi) - log Phi(lo): (a) Taylor series near the mean, (b) erfcx tail, (c) plain difference
    h = math.sqrt(2.0 / math.pi) / torch.special.erfcx(-t * r)
    delta_series = 2.0 * d * h * (1.0 + d * d / 6.0 * ((t + h) * (t + 2.0 * h) - 1.0))
    hi_neg = hi.clamp(max=0.0)
    delta_tail = (torch.log(torch.special.erfcx(-hi_neg * r)) - torch.log(torch.special.erfcx(-lo * r))
                  + 2.0 * (-t) * d)
    delta_mid = log_phi_hi - torch.special.log_ndtr(lo)
    d_series = 2e-3 if dtype == torch.float64 else 0.1
    use_series = (d <= d_series) & (-t * d <= 1.0)
    delta = torch.where(use_series, delta_series, torch.where(hi <= 0, delta_tail, delta_mid))
    delta = delta.clamp(min=tiny)
    log1mexp = torch.where(delta < LOG_2, torch.log(-torch.expm1(-delta)), torch.log1p(-torch.exp(-delta)))
    interior = log_phi_hi + log1mexp

    # edge bins: x = 0 -> Phi(zc + d), x = 255 -> 1 - Phi(zc - d) = Phi(d - zc)
    first = torch.special.log_ndtr((zc + d).clamp(-z_max, z_max))
    last = torch.special.log_ndtr((d - zc).clamp(-z_max, z_max))
    x = x.expand_as(zc)
    out = torch.where(x == 0, first, torch.where(x == 255, last, interior))
    return out.clamp(min=torch.finfo(out_dtype).min).to(out_dtype)


_FAST_MIN_CDF = 1e-200
_FAST_MIN_RATIO = 1e-7
_SQRT_HALF = math.sqrt(0.5)


def log_discretised_normal(x_uint8: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """As ``_log_discretised_normal_stable`` (same shapes, dtypes and errors), computed directly in float64 where
    that is accurate and by the stable path elsewhere."""
    if x_uint8.is_floating_point() or x_uint8.is_complex() or x_uint8.dtype == torch.bool or \
            not mean.is_floating_point():
        return _log_discretised_normal_stable(x_uint8, mean, log_sigma)
    if x_uint8.dtype != torch.uint8 and x_uint8.numel():
        lo, hi = int(x_uint8.min()), int(x_uint8.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"log_discretised_normal: x must be in 0..255, got values in {lo}..{hi}")
    log_sigma = torch.as_tensor(log_sigma, device=mean.device)
    x = x_uint8.to(device=mean.device, dtype=torch.float64)
    inv_sigma = torch.exp(-log_sigma.double().clamp(-30.0, 30.0))
    zc = ((x + 0.5) / 256.0 - mean.double()) * inv_sigma
    d = (inv_sigma / 512.0).expand_as(zc)
    t = -zc.abs()
    upper = 0.5 * torch.erfc(-(t + d) * _SQRT_HALF)
    p = upper - 0.5 * torch.erfc(-(t - d) * _SQRT_HALF)
    lower_edge, upper_edge = x == 0, x == 255
    edge_z = torch.where(lower_edge, zc + d, d - zc)
    edge_p = 0.5 * torch.erfc(-edge_z * _SQRT_HALF)
    is_edge = lower_edge | upper_edge
    p = torch.where(is_edge, edge_p, p)
    ok = torch.where(is_edge, edge_p >= _FAST_MIN_CDF, (upper >= _FAST_MIN_CDF) & (p >= _FAST_MIN_RATIO * upper))
    out = torch.log(p.clamp(min=_FAST_MIN_CDF))
    if not bool(ok.all()):
        bad = ~ok
        xb, mb, lb = torch.broadcast_tensors(x_uint8.to(mean.device), mean, log_sigma.to(mean.device))
        out[bad] = _log_discretised_normal_stable(xb[bad], mb[bad], lb[bad]).double()
    return out.to(mean.dtype)
