"""Importance-sampled log-likelihood estimate L_k (Burda et al. 2016; methods.md 5.1, 5.3).

The standard test-set number is L_5000: per image, 5000 posterior samples, logsumexp of the log-weights
minus log 5000. Samples are drawn in chunks so that k = 5000 fits in memory; chunk logsumexps are
combined in float64.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, chunk_size: int = 100,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """L_k(x) = log (1/k) sum_{i=1..k} w_i per image, shape (B,), float64, nats/image (a lower bound on
    log p(x) in the model's data space; add -likelihood.discrete_offset_nats(D) for the 8-bit data).

    Args:
        model: a VAE (uses ``model.log_weights(x, k) -> (k, B)``); evaluated as-is (call ``model.eval()`` first
            for evaluation-time sigma).
        x: data-space batch (B, C, H, W) (output of ``model.preprocess``).
        k: number of importance samples (>= 1).
        chunk_size: samples per forward pass (memory ~ chunk_size * B decoder outputs).
        generator: optional torch.Generator for reproducible samples.
    Raises ValueError if k or chunk_size < 1. The result does not depend on chunk_size (up to float rounding).
    """
    if int(k) < 1 or int(chunk_size) < 1:
        raise ValueError(f"iwae_bound: k and chunk_size must be >= 1, got k={k!r}, chunk_size={chunk_size!r}")
    k, chunk_size = int(k), int(chunk_size)
    chunk_lse = []
    for start in range(0, k, chunk_size):
        n = min(chunk_size, k - start)
        log_w = model.log_weights(x, n, generator=generator).double()      # (n, B)
        chunk_lse.append(torch.logsumexp(log_w, dim=0))
    return torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(k)
