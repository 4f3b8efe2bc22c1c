"""Bounds on log p(x) and their units: the importance-weighted L_k and the conversion to bits/dim."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, chunk_size: int = 100,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """L_k(x) = log (1/k) sum_{i=1..k} w_i per image (Burda, Grosse, Salakhutdinov 2016, "Importance Weighted
    Autoencoders", eq. 8): a lower bound on log p(x) in the model's data space that tightens as k grows.

    Samples are drawn in chunks so that k = 5000 fits in memory; chunk logsumexps are combined in float64.

    Args:
        model: a VAE (uses ``model.log_weights(x, k) -> (k, B)``), evaluated as-is (call ``model.eval()``
            first for evaluation-time sigma).
        x: data-space batch (B, C, H, W) (output of ``model.preprocess``).
        k: number of importance samples (>= 1).
        chunk_size: samples per forward pass (memory ~ chunk_size * B decoder outputs).
        generator: optional torch.Generator for reproducible samples.
    Returns:
        (B,) float64, nats per image. Add -likelihood.discrete_offset_nats(D) for a bound on the 8-bit data.
        The result does not depend on chunk_size (up to float rounding).
    Raises:
        ValueError: k or chunk_size < 1.
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


def bits_per_dim(nll_nats: float, offset_nats: float, dim: int) -> float:
    """(NLL + offset) / (D ln 2): nats per image to bits per dimension.

    Args:
        nll_nats: -log p per image in nats (a continuous density for dequantised data).
        offset_nats: the likelihood's ``discrete_offset_nats(D)`` (D ln 256 for a density of dequantised data,
            which makes the result a bound on the 8-bit data (Theis et al. 2016, Section 3.1); 0 otherwise).
        dim: D = C*H*W.
    Raises:
        ValueError: dim < 1.
    """
    if dim < 1:
        raise ValueError(f"bits_per_dim: dim must be >= 1, got {dim}")
    return (nll_nats + offset_nats) / (dim * math.log(2))
