"""Bitwise categorical decoder: 8 independent Bernoulli bits per sub-pixel, an exact 8-bit likelihood (the
bitwise-categorical row of Rybkin et al. 2021, Table 2; as the first author's blox-nn ``ImageBitwiseCategorical``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vaebench.registry import LIKELIHOODS
from vaebench.vae.functional import rand_like
from vaebench.vae.likelihoods import DiscreteLikelihood, split_channels

BITS = 8


def bit_weights(like: torch.Tensor) -> torch.Tensor:
    """2^(8-b) for bits b = 1..8, most significant first: (8, 1, 1, 1) in ``like``'s dtype and device."""
    return (2.0 ** torch.arange(BITS - 1, -1, -1, device=like.device, dtype=like.dtype)).view(BITS, 1, 1, 1)


def unpack_bits(v: torch.Tensor) -> torch.Tensor:
    """Integer values 0..255 (..., C, H, W) -> their 8 bits, most significant first, (..., 8, C, H, W) long."""
    shifts = torch.arange(BITS - 1, -1, -1, device=v.device).view(BITS, 1, 1, 1)
    return (v.long().unsqueeze(-4) >> shifts) & 1


@LIKELIHOODS.register
class BitwiseCategorical(DiscreteLikelihood):
    """8 logits l_1..l_8 per sub-pixel (layout (8, C)), bit b of the intensity v (most significant first) ~
    Bernoulli(sigmoid(l_b)) independently: log P(v) = sum_b [bit_b(v) l_b - softplus(l_b)], summed over C, H, W
    (nats/image). v <-> bits is a bijection on 0..255, so P sums to 1 over the 256 values. Data: long intensities
    0..255 (B, C, H, W); ``mean`` is E[v]/255 = sum_b sigmoid(l_b) 2^(8-b) / 255; ``draw`` samples the bits."""

    name = "bitwise_categorical"
    family = "bitwise_categorical"
    description = "bitwise categorical, 8 independent Bernoulli bits per sub-pixel (exact discrete likelihood)"
    out_channels = BITS

    def log_prob(self, x, out, accumulate=False):
        logits = split_channels(out, BITS)                                   # (*S, 8, C, H, W)
        bits = unpack_bits(x).to(logits.dtype)
        return (bits * logits - F.softplus(logits)).sum((-4, -3, -2, -1))

    def mean(self, out):
        probs = torch.sigmoid(split_channels(out, BITS))
        return (probs * bit_weights(probs)).sum(-4) / 255.0

    def draw(self, out, generator=None):
        probs = torch.sigmoid(split_channels(out, BITS))
        bits = (rand_like(probs, generator) < probs).to(probs.dtype)
        return (bits * bit_weights(probs)).sum(-4) / 255.0
