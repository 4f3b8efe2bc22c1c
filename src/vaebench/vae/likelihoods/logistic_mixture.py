"""Discretised mixture of logistics per sub-pixel, an exact 8-bit likelihood (Salimans, Karpathy, Chen, Kingma 2017,
PixelCNN++, Section 2.1 and eq. 2; the logistic-mixture row of Rybkin et al. 2021, Table 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt

from vaebench.registry import LIKELIHOODS, ComponentConfig
from vaebench.vae.functional import LOG_2, rand_like
from vaebench.vae.likelihoods import DiscreteLikelihood, split_channels

LOG_SCALE_MIN = -7.0          # PixelCNN++'s floor of the log scale (s >= 9.1e-4, about a quarter of a half-bin)
HALF_BIN = 1.0 / 255.0        # half-width of a bin on the [-1, 1] scale


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, same shape: log(-expm1(-d)) below ln 2, log1p(-exp(-d)) above (Maechler 2012)."""
    small = d.clamp(max=LOG_2)
    large = d.clamp(min=LOG_2)
    return torch.where(d < LOG_2, torch.log(-torch.expm1(-small)), torch.log1p(-torch.exp(-large)))


def log_discretised_logistic(v: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """log P(v) of 8-bit values ``v`` (integer 0..255) under a logistic(mu, s = exp(log_s)) on the [-1, 1] scale,
    x = v/127.5 - 1, discretised into bins [x - 1/255, x + 1/255] with open edge bins (v = 0: (-inf, x + 1/255],
    v = 255: [x - 1/255, inf)); PixelCNN++ eq. 2. Arguments broadcast; nats, ``mu``'s dtype. ``log_s`` is used as
    given (no floor). Interior bins: log(sigmoid(a) - sigmoid(b)) = -softplus(-a) - softplus(b) + log(1 - exp(-(a -
    b))), finite for any finite mu and log_s; no density approximation."""
    x = v.to(mu.dtype) / 127.5 - 1.0
    inv_s = torch.exp(-log_s)
    centred = x - mu
    plus = inv_s * (centred + HALF_BIN)
    minus = inv_s * (centred - HALF_BIN)
    log_cdf_plus = -F.softplus(-plus)                # log sigmoid(plus)
    log_sf_minus = -F.softplus(minus)                # log (1 - sigmoid(minus))
    interior = log_cdf_plus + log_sf_minus + log1mexp(2.0 * HALF_BIN * inv_s)
    v = v.expand_as(interior)
    return torch.where(v == 0, log_cdf_plus, torch.where(v == 255, log_sf_minus, interior))


@LIKELIHOODS.register
class LogisticMixture(DiscreteLikelihood):
    """K logistics per sub-pixel, each sub-pixel its own independent mixture: output groups (3K, C) = K mixture
    logits, K means (raw, on the [-1, 1] scale of x = v/127.5 - 1) and K log scales (floored at -7, as in
    PixelCNN++); log P(v) = logsumexp_k [log_softmax(logits)_k + ``log_discretised_logistic``(v | mu_k, s_k)],
    summed over C, H, W (nats/image). For grey images this is PixelCNN++'s 1-d mixture exactly; for colour images
    PixelCNN++ shares the mixture indicator across R, G, B and conditions the G and B means linearly on the
    observed R (and G) values, which this per-sub-pixel mixture drops. Data: long intensities 0..255 (B, C, H, W).
    ``mean`` is the exact E[v]/255 of the discrete distribution, sum_{j=0}^{254} P(v > j) / 255; ``draw`` samples
    the component and a logistic, and bins it: an exact draw of v, returned as v/255.
    K defaults to 10, PixelCNN++'s ``--nr_logistic_mix`` default. Raises ValueError for K < 1."""

    name = "logistic_mixture"
    family = "logistic_mixture"
    description = ("discretised mixture of logistics per sub-pixel (PixelCNN++ without the RGB conditioning), "
                   "exact discrete likelihood")

    class Config(ComponentConfig):
        n_mix: PositiveInt = Field(10, description="Mixture components K per sub-pixel (3K decoder outputs each); "
                                                   "10 is PixelCNN++'s default.")

    def __init__(self, n_mix: int = 10):
        super().__init__()
        if not (isinstance(n_mix, int) and n_mix >= 1):
            raise ValueError(f"likelihood.n_mix: must be an int >= 1, got {n_mix!r}")
        self.n_mix = n_mix
        self.out_channels = 3 * n_mix

    def params(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log mixture weights, means, floored log scales), each (*S, K, C, H, W), of decoder output
        (*S, 3K*C, H, W)."""
        k = self.n_mix
        groups = split_channels(out, self.out_channels)
        log_pi = F.log_softmax(groups[..., :k, :, :, :], dim=-4)
        return log_pi, groups[..., k : 2 * k, :, :, :], groups[..., 2 * k :, :, :, :].clamp(min=LOG_SCALE_MIN)

    def log_prob(self, x, out, accumulate=False):
        log_pi, mu, log_s = self.params(out)
        log_p = log_discretised_logistic(x.long().unsqueeze(-4), mu, log_s)      # (*S, K, C, H, W)
        return torch.logsumexp(log_pi + log_p, dim=-4).sum((-3, -2, -1))

    def mean(self, out):
        log_pi, mu, log_s = self.params(out)
        pi, inv_s = log_pi.exp(), torch.exp(-log_s)
        edges = (torch.arange(255, device=out.device, dtype=mu.dtype) + 0.5) / 127.5 - 1.0   # upper edge of bin j
        step = max(1, 2**24 // max(1, mu.numel()))
        total = torch.zeros_like(mu[..., 0, :, :, :])
        for j in range(0, 255, step):
            above = torch.sigmoid((mu.unsqueeze(-1) - edges[j : j + step]) * inv_s.unsqueeze(-1)).sum(-1)
            total = total + (pi * above).sum(-4)                 # sum_j P(v > j) over this chunk of j
        return total / 255.0

    def draw(self, out, generator=None):
        log_pi, mu, log_s = self.params(out)
        u = rand_like(log_pi, generator).to(log_pi.dtype).clamp(min=2.0**-25)
        k = torch.argmax(log_pi - torch.log(-torch.log(u)), dim=-4, keepdim=True)      # Gumbel-max component
        mu_k, log_s_k = mu.gather(-4, k).squeeze(-4), log_s.gather(-4, k).squeeze(-4)
        u = rand_like(mu_k, generator).to(mu_k.dtype).clamp(min=2.0**-25)
        logistic = mu_k + torch.exp(log_s_k) * (torch.log(u) - torch.log1p(-u))
        v = torch.floor((logistic + 1.0) * 127.5 + 0.5).clamp(0.0, 255.0)           # the bin holding the draw
        return v / 255.0

