"""Bounds on log p(x) and their units: the importance-weighted L_k and the conversion to bits/dim."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, chunk_size: int = 100,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """L_k(x) = log (1/k) sum_i w_i (Burda, Grosse, Salakhutdinov 2016, eq. 8) of data-space x (B, C, H, W), drawn
    ``chunk_size`` samples per pass: (B,) float64, nats per image. Raises ValueError if k or chunk_size < 1."""
    if int(k) < 1 or int(chunk_size) < 1:
        raise ValueError(f"iwae_bound: k and chunk_size must be >= 1, got k={k!r}, chunk_size={chunk_size!r}")
    k, chunk_size = int(k), int(chunk_size)
    chunk_lse = []
    for start in range(0, k, chunk_size):
        n = min(chunk_size, k - start)
        log_w = model.log_weights(x, n, generator=generator).double()
        chunk_lse.append(torch.logsumexp(log_w, dim=0))
    return torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(k)


def bits_per_dim(nll_nats: float, offset_nats: float, dim: int) -> float:
    """(NLL + offset) / (D ln 2): nats per image to bits/dim; ``offset_nats`` is ``discrete_offset_nats(D)``
    (Theis et al. 2016, Section 3.1), D = C*H*W. Raises ValueError if dim < 1."""
    if dim < 1:
        raise ValueError(f"bits_per_dim: dim must be >= 1, got {dim}")
    return (nll_nats + offset_nats) / (dim * math.log(2))


BYTES_PER_OUTPUT_ELEMENT = 128   # working memory per decoder output element, an upper estimate


def samples_per_pass(model, memory_mb: float, frames: int = 1) -> int:
    """Decoded samples (images x importance samples; videos of ``frames`` decoded frames) one pass may hold in
    ``memory_mb`` MiB, at least 1. Raises ValueError if memory_mb <= 0."""
    if not memory_mb > 0:
        raise ValueError(f"samples_per_pass: memory_mb must be > 0, got {memory_mb!r}")
    elements = model.likelihood.out_channels * math.prod(model.image_shape) * max(1, int(frames))
    return max(1, int(memory_mb * 2**20) // (elements * BYTES_PER_OUTPUT_ELEMENT))


def block_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """Mean of L_m over floor(k/m) disjoint blocks of ``log_w`` (k, B), an unbiased E[L_m] (Burda et al. 2016,
    Theorem 1): (B,) float64 nats. Raises ValueError unless 1 <= m <= k."""
    k = log_w.shape[0]
    if not 1 <= m <= k:
        raise ValueError(f"block_bound: need 1 <= m <= k, got m={m}, k={k}")
    blocks = k // m
    lw = log_w[: blocks * m].double().reshape(blocks, m, -1)
    return (torch.logsumexp(lw, dim=1) - math.log(m)).mean(0)


@torch.no_grad()
def per_image_estimates(model, x: torch.Tensor, x_uint8: torch.Tensor, k: int, memory_mb: float,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image estimates of data-space x and uint8 x_uint8 (N, C, H, W) (or videos (N, T, C, H, W) of a sequence
    model: per sequence), each (N,) float64 nats: ``elbo``,
    ``recon``, ``kl`` (Kingma & Welling 2014, eq. 7), ``L_k`` (Burda et al. 2016, eq. 8), ``L_k10`` (``block_bound``
    with m = k/10), ``sse`` (sum over pixels of the squared error of the decoder mean at the ELBO's z, on the
    likelihood's unit scale; only when ``model.likelihood.supports_sse``) and the same per
    ``Likelihood.extra_log_probs`` column c (``recon_c``, ...).
    Raises ValueError if k < 10 or x and x_uint8 differ in length."""
    if int(k) < 10:
        raise ValueError(f"per_image_estimates: k must be >= 10 (the diagnostic uses k/10), got {k!r}")
    if len(x) != len(x_uint8):
        raise ValueError(f"per_image_estimates: x has {len(x)} images, x_uint8 {len(x_uint8)}")
    k = int(k)
    per_pass = samples_per_pass(model, memory_mb, x.shape[1] - 1 if x.dim() == 5 else 1)
    batch = max(1, min(per_pass, 100, len(x)))
    chunk = max(1, per_pass // batch)
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name, value):
        parts.setdefault(name, []).append(value.double().cpu())

    for i in range(0, len(x), batch):
        xb, ub = x[i : i + batch], x_uint8[i : i + batch]
        t = model.forward_terms(xb, k=None, x_uint8=ub, generator=generator,
                                need_sse=bool(getattr(model.likelihood, "supports_sse", False)))
        kl = t["kl"].double()
        if "sse" in t:
            add("sse", t["sse"])
        for suffix, log_px in {"": t["log_px"], **{f"_{c}": v for c, v in t["extra_log_px"].items()}}.items():
            add(f"recon{suffix}", -log_px.double())
            add(f"elbo{suffix}", log_px.double() - kl)
        add("kl", kl)
        cols: dict[str, list[torch.Tensor]] = {}
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            t = model.forward_terms(xb, k=n, x_uint8=ub, generator=generator)
            cols.setdefault("", []).append(t["log_w"].double())
            for c, v in t["extra_log_w"].items():
                cols.setdefault(f"_{c}", []).append(v.double())
        for suffix, chunks in cols.items():
            log_w = torch.cat(chunks)
            add(f"L_k{suffix}", torch.logsumexp(log_w, 0) - math.log(k))
            add(f"L_k10{suffix}", block_bound(log_w, k // 10))
    return {name: torch.cat(v) for name, v in parts.items()}
