"""256-way categorical decoder per sub-pixel, an exact discrete likelihood (Rybkin et al. 2021, Table 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vaebench.registry import LIKELIHOODS
from vaebench.vae.likelihoods import DiscreteLikelihood, split_channels


@LIKELIHOODS.register
class Categorical(DiscreteLikelihood):
    """256 logits per sub-pixel (layout (256, C)), log p = -cross-entropy summed over C, H, W; data: long
    intensities 0..255 (B, C, H, W); ``mean`` is E[x] / 255."""

    name = "categorical"
    family = "categorical"
    description = "256-way categorical per sub-pixel (exact discrete likelihood)"
    out_channels = 256

    def log_prob(self, x, out, accumulate=False):
        logits = split_channels(out, 256).movedim(-4, -1)                # (*S, C, H, W, 256)
        logp = F.log_softmax(logits, dim=-1)
        index = x.long().expand(*logp.shape[:-1]).unsqueeze(-1)
        return logp.gather(-1, index).squeeze(-1).sum((-3, -2, -1))

    def draw(self, out, generator=None):
        probs = F.softmax(split_channels(out, 256).movedim(-4, -1), dim=-1)      # (*S, C, H, W, 256)
        flat = probs.reshape(-1, 256)
        if generator is not None:
            flat = flat.to(generator.device)
        idx = torch.multinomial(flat, 1, generator=generator).to(out.device)
        return idx.view(probs.shape[:-1]).to(probs.dtype) / 255.0

    def mean(self, out):
        probs = F.softmax(split_channels(out, 256).movedim(-4, -1), dim=-1)      # (*S, C, H, W, 256)
        levels = torch.arange(256, device=out.device, dtype=probs.dtype) / 255.0
        return probs @ levels
