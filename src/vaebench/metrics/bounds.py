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


# Working memory of one decoded sample, in bytes per decoder output element: the float32 output and the
# temporaries of the likelihood's log-probabilities, e.g. a categorical decoder's softmax and gather, or a
# Gaussian decoder's discretised column (about ten float64 temporaries per element). An upper estimate;
# the evaluate stage's peak resident memory is measured per model family (README).
BYTES_PER_OUTPUT_ELEMENT = 128


def samples_per_pass(model, memory_mb: float) -> int:
    """How many decoded samples (images x importance samples) one forward pass may hold within ``memory_mb``
    MiB of working memory: memory_mb * 2^20 / (decoder output elements per sample * BYTES_PER_OUTPUT_ELEMENT),
    at least 1. A categorical decoder (256 logits per sub-pixel) gets ~256x fewer than a Gaussian one.

    Raises:
        ValueError: memory_mb <= 0.
    """
    if not memory_mb > 0:
        raise ValueError(f"samples_per_pass: memory_mb must be > 0, got {memory_mb!r}")
    elements = model.likelihood.out_channels * math.prod(model.image_shape)
    return max(1, int(memory_mb * 2**20) // (elements * BYTES_PER_OUTPUT_ELEMENT))


def block_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """The average of L_m over the floor(k/m) disjoint blocks of m consecutive samples of ``log_w`` (k, B):
    an unbiased estimate of E[L_m] from the same samples as L_k (Burda et al. 2016, Theorem 1: E[L_m] is
    non-decreasing in m, so L_k - L_m >= 0 in expectation and a large gap means L_k has not converged).

    Returns (B,) float64 nats. Raises ValueError unless 1 <= m <= k.
    """
    k = log_w.shape[0]
    if not 1 <= m <= k:
        raise ValueError(f"block_bound: need 1 <= m <= k, got m={m}, k={k}")
    blocks = k // m
    lw = log_w[: blocks * m].double().reshape(blocks, m, -1)
    return (torch.logsumexp(lw, dim=1) - math.log(m)).mean(0)


@torch.no_grad()
def per_image_estimates(model, x: torch.Tensor, x_uint8: torch.Tensor, k: int, memory_mb: float,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Every per-image estimate of the evaluation on the same images, in nats per image, float64 (N,):

    * ``elbo``, ``recon`` (= -log p(x|z)), ``kl`` (closed form): one z ~ q(z|x) per image (Kingma & Welling
      2014, eq. 7 with the analytic KL);
    * ``L_k``: log (1/k) sum_i w_i with k fresh samples (Burda et al. 2016, eq. 8);
    * ``L_k10``: E[L_{k/10}] estimated from the same k samples in 10 disjoint blocks (``block_bound``),
      so L_k - L_k10 is the convergence diagnostic (None-free: requires k >= 10);
    * for each further likelihood column c of the decoder (``Likelihood.extra_log_probs``, e.g. the
      Gaussian decoder's ``discretised`` 8-bit likelihood): ``recon_c``, ``elbo_c``, ``L_k_c``, ``L_k10_c``
      from the same samples.

    Args:
        model: a VAE in eval mode. x: data-space images (N, C, H, W) (``model.preprocess_fixed``);
        x_uint8: the same images as uint8 (N, C, H, W). k: importance samples (>= 10).
        memory_mb: working-memory budget of one forward pass (``samples_per_pass``): bounds peak memory
            whatever the decoder, e.g. a categorical decoder's 256 logits per sub-pixel.
        generator: torch.Generator of the posterior samples (reproducible estimates).
    Raises:
        ValueError: k < 10, or x and x_uint8 of different lengths.
    """
    if int(k) < 10:
        raise ValueError(f"per_image_estimates: k must be >= 10 (the diagnostic uses k/10), got {k!r}")
    if len(x) != len(x_uint8):
        raise ValueError(f"per_image_estimates: x has {len(x)} images, x_uint8 {len(x_uint8)}")
    k = int(k)
    per_pass = samples_per_pass(model, memory_mb)
    batch = max(1, min(per_pass, 100, len(x)))
    chunk = max(1, per_pass // batch)
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name, value):
        parts.setdefault(name, []).append(value.double().cpu())

    for i in range(0, len(x), batch):
        xb, ub = x[i : i + batch], x_uint8[i : i + batch]
        t = model.forward_terms(xb, k=None, x_uint8=ub, generator=generator)
        kl = t["kl"].double()
        for suffix, log_px in {"": t["log_px"], **{f"_{c}": v for c, v in t["extra_log_px"].items()}}.items():
            add(f"recon{suffix}", -log_px.double())
            add(f"elbo{suffix}", log_px.double() - kl)               # ELBO = -(recon + KL), in float64
        add("kl", kl)
        cols: dict[str, list[torch.Tensor]] = {}
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            t = model.forward_terms(xb, k=n, x_uint8=ub, generator=generator)
            cols.setdefault("", []).append(t["log_w"].double())
            for c, v in t["extra_log_w"].items():
                cols.setdefault(f"_{c}", []).append(v.double())
        for suffix, chunks in cols.items():
            log_w = torch.cat(chunks)                                   # (k, B)
            add(f"L_k{suffix}", torch.logsumexp(log_w, 0) - math.log(k))
            add(f"L_k10{suffix}", block_bound(log_w, k // 10))
    return {name: torch.cat(v) for name, v in parts.items()}
