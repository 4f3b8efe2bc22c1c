"""Decoder likelihoods p(x|z): Bernoulli, Gaussian (five sigma modes, the sigma-VAE axis) and 256-way Categorical.

Each likelihood owns three things that must agree with each other:

* the data space it models (``data_kind`` and ``preprocess``: uint8 images -> model input),
* how the decoder's raw output is read (``out_channels`` per image channel, ``mean``),
* the per-image log-likelihood ``log_prob(x, out)`` in nats, summed over all C*H*W sub-pixels.

Shapes. ``x`` is (B, C, H, W) in the model's data space. The decoder output ``out`` is
(*S, out_channels*C, H, W) where S is (B,) or (k, B) (k importance samples per image, decoded in one
pass); channel layout is (out_channels, C), i.e. ``out.view(*S, out_channels, C, H, W)``. Every
per-image quantity comes back with shape S. Units: nats per image.

Sources: methods.md section 2 (sigma-VAE, Rybkin et al. 2021, eq. 3 and the optimal sigma* ^2 = MSE),
2.3 (soft clip), 6.3 (dequantisation and discrete bounds).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
LOG_256 = math.log(256.0)
SIGMA_MODES = ("fixed", "learned_shared", "optimal_shared", "optimal_per_image", "per_pixel")


def softclip(x: torch.Tensor, min_value: float) -> torch.Tensor:
    """Soft lower clip: min + softplus(x - min) (Chua et al. 2018; methods.md 2.3). Shape preserved.

    Smooth, increasing, never below min (> min unless softplus underflows), and ~x for x >> min.
    Test vectors (methods.md 6.4): softclip(0, -6) = 0.002476, softclip(-10, -6) = -5.98185.
    """
    return min_value + F.softplus(x - min_value)


def _rand_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0,1) noise shaped like x (float32, on x's device); drawn on the generator's device if given."""
    if generator is None:
        return torch.rand(x.shape, device=x.device)
    return torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)


def _check_uint8(x_uint8: torch.Tensor) -> None:
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise ValueError(f"preprocess expects a (B, C, H, W) uint8 tensor, got {x_uint8.dtype} {tuple(x_uint8.shape)}")


def _split(out: torch.Tensor, out_channels: int) -> torch.Tensor:
    """(*S, out_channels*C, H, W) -> (*S, out_channels, C, H, W)."""
    *lead, oc, h, w = out.shape
    if oc % out_channels:
        raise ValueError(f"decoder output has {oc} channels, not a multiple of out_channels={out_channels}")
    return out.reshape(*lead, out_channels, oc // out_channels, h, w)


class Likelihood(nn.Module):
    """Base class. Subclasses set ``out_channels``, ``data_kind`` and implement the methods below."""

    out_channels: int = 1
    data_kind: str = ""

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the model's data space (same device)."""
        raise NotImplementedError

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Data-space x -> float intensities in [0, 1] (encoder input, SSE constraint), shape (B, C, H, W)."""
        return x.float()

    def log_prob(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        """log p(x|z) summed over C, H, W: x (B,C,H,W), out (*S, out_channels*C, H, W) -> (*S,), nats/image."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder mean in [0, 1]: (*S, out_channels*C, H, W) -> (*S, C, H, W)."""
        raise NotImplementedError

    def discrete_offset_nats(self, D: int) -> float:
        """Nats to add to -log p(x) to get a bound on the NLL of the 8-bit data (methods.md 6.3). Default 0."""
        return 0.0

    def tracked_scalars(self) -> dict[str, float]:
        """Scalars worth logging every epoch (e.g. log_sigma). Default: none."""
        return {}

    def end_epoch(self) -> None:
        """Called once at the end of every training epoch. Default: nothing."""


class BernoulliLikelihood(Likelihood):
    """Bernoulli decoder on dynamically binarised images (Burda et al. 2016 protocol; methods.md 5.2).

    Data: x ~ Bernoulli(x_uint8 / 255) resampled at every ``preprocess`` call, float {0., 1.}.
    Decoder output: one logit per sub-pixel. log p(x|z) = sum [x l - softplus(l)] = -BCEWithLogits summed.
    It is an exact likelihood of the binarised images, so ``discrete_offset_nats`` is 0.
    """

    out_channels = 1
    data_kind = "binary"

    def preprocess(self, x_uint8, generator=None):
        _check_uint8(x_uint8)
        p = x_uint8.float() / 255.0
        return (_rand_like(p, generator) < p).float()

    def log_prob(self, x, out, accumulate=False):
        logits = out
        return (x * logits - F.softplus(logits)).sum((-3, -2, -1))

    def mean(self, out):
        return torch.sigmoid(out)


class CategoricalLikelihood(Likelihood):
    """256-way categorical decoder per sub-pixel (methods.md 2.2); a true discrete likelihood.

    Data: integer intensities 0..255 as a **long** tensor (B, C, H, W) (``preprocess`` just casts).
    Decoder output: 256 logits per sub-pixel, layout (256, C). log p = -cross-entropy, summed over C, H, W.
    bits/dim = -log p / (D ln 2) directly, so ``discrete_offset_nats`` is 0.
    ``mean`` is the expected intensity E[x] / 255.
    """

    out_channels = 256
    data_kind = "discrete"

    def preprocess(self, x_uint8, generator=None):
        _check_uint8(x_uint8)
        return x_uint8.long()

    def to_unit(self, x):
        return x.float() / 255.0

    def log_prob(self, x, out, accumulate=False):
        # classes moved last: a view of the MLP decoder's class-last storage, for which log_softmax over
        # the innermost dimension is ~2x faster on a CPU than over a strided class dimension
        logits = _split(out, 256).movedim(-4, -1)                        # (*S, C, H, W, 256)
        logp = F.log_softmax(logits, dim=-1)
        index = x.long().expand(*logp.shape[:-1]).unsqueeze(-1)
        return logp.gather(-1, index).squeeze(-1).sum((-3, -2, -1))

    def mean(self, out):
        probs = F.softmax(_split(out, 256).movedim(-4, -1), dim=-1)      # (*S, C, H, W, 256)
        levels = torch.arange(256, device=out.device, dtype=probs.dtype) / 255.0
        return probs @ levels


class GaussianLikelihood(Likelihood):
    """Gaussian decoder N(x; mean, sigma^2) on uniformly dequantised data (sigma-VAE, methods.md 2.1, 2.7, 6.3).

    Data: y = (x_uint8 + u) / 256, u ~ U[0,1)^D, float in [0, 1). ``discrete_offset_nats(D)`` = D ln 256, so
    -log p(y) + D ln 256 bounds the NLL of the 8-bit image (methods.md 6.3).
    Decoder mean = sigmoid(first output channel group).

        -log p(x|z) = sum_{c,h,w} [ (x - mean)^2 / (2 sigma^2) + log_sigma + 1/2 log 2 pi ]

    sigma modes (``log_sigma_min`` soft-clips every mode except ``fixed``):
      fixed             log_sigma = log(sigma_value)
      learned_shared    one scalar nn.Parameter log_sigma (float, init 0)
      optimal_shared    log_sigma = 1/2 log MSE, MSE over the whole batch (all images, samples, pixels);
                        in eval mode the running average of the training batch MSEs frozen by ``end_epoch``
                        (buffer ``eval_mse``; before any ``end_epoch`` the current batch MSE is used)
      optimal_per_image log_sigma_i = 1/2 log MSE_i over the image's own C, H, W (same in train and eval)
      per_pixel         decoder emits a second channel group of raw log_sigma (out_channels = 2)
    sigma* ^2 = MSE is the maximum-likelihood variance given the mean (methods.md 2.1; not detached).
    Raises ValueError for an unknown mode or a non-positive sigma_value.
    """

    data_kind = "dequantized"

    def __init__(self, sigma: str = "fixed", sigma_value: float = 1.0, log_sigma_min: float = -6.0):
        super().__init__()
        if sigma not in SIGMA_MODES:
            raise ValueError(f"likelihood.sigma: unknown value {sigma!r} (expected one of {SIGMA_MODES})")
        if sigma == "fixed" and not sigma_value > 0:
            raise ValueError(f"likelihood.sigma_value: must be > 0, got {sigma_value!r}")
        self.sigma = sigma
        self.sigma_value = float(sigma_value)
        self.log_sigma_min = float(log_sigma_min)
        self.out_channels = 2 if sigma == "per_pixel" else 1
        if sigma == "learned_shared":
            self.log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float32))
        if sigma == "optimal_shared":
            self.register_buffer("mse_sum", torch.zeros((), dtype=torch.float64))
            self.register_buffer("mse_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("eval_mse", torch.full((), -1.0, dtype=torch.float64))  # < 0: not set yet
        self._last_log_sigma: torch.Tensor | None = None

    def preprocess(self, x_uint8, generator=None):
        _check_uint8(x_uint8)
        return (x_uint8.float() + _rand_like(x_uint8, generator)) / 256.0

    def mean(self, out):
        return torch.sigmoid(_split(out, self.out_channels)[..., 0, :, :, :])

    def discrete_offset_nats(self, D):
        return D * LOG_256

    def current_log_sigma(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        """log_sigma used by ``log_prob``, broadcastable to (*S, C, H, W): shape (), (*S, 1, 1, 1) or (*S, C, H, W).

        accumulate=True (training step) adds the batch MSE to the epoch running average (optimal_shared only).
        """
        if self.sigma == "fixed":
            return torch.tensor(math.log(self.sigma_value), device=out.device, dtype=out.dtype)
        if self.sigma == "learned_shared":
            return softclip(self.log_sigma, self.log_sigma_min)
        if self.sigma == "per_pixel":
            return softclip(_split(out, 2)[..., 1, :, :, :], self.log_sigma_min)
        sq = (x - self.mean(out)).pow(2)
        if self.sigma == "optimal_per_image":
            mse = sq.mean((-3, -2, -1), keepdim=True)
        else:  # optimal_shared
            mse = sq.mean()
            if accumulate:
                with torch.no_grad():
                    self.mse_sum += mse.detach().double()
                    self.mse_count += 1
            if not self.training and self.eval_mse > 0:
                mse = self.eval_mse.to(out.dtype)
        return softclip(0.5 * torch.log(mse), self.log_sigma_min)

    def log_prob(self, x, out, accumulate=False):
        mean = self.mean(out)
        log_sigma = self.current_log_sigma(x, out, accumulate)
        self._last_log_sigma = log_sigma.detach()
        nll = (x - mean).pow(2) * torch.exp(-2.0 * log_sigma) / 2.0 + log_sigma + 0.5 * LOG_2PI
        return -nll.sum((-3, -2, -1))

    def end_epoch(self):
        """optimal_shared: freeze the mean of this epoch's training batch MSEs as ``eval_mse`` and reset."""
        if self.sigma == "optimal_shared" and self.mse_count > 0:
            self.eval_mse.copy_(self.mse_sum / self.mse_count)
            self.mse_sum.zero_()
            self.mse_count.zero_()

    def tracked_scalars(self):
        """Shared modes: {'log_sigma', 'effective_beta' = 2 sigma^2} (the "SSE + beta KL" convention, methods.md
        2.1); optimal_shared reports the frozen evaluation sigma once available. Per-image / per-pixel: mean
        log_sigma of the last batch. Empty before anything is known."""
        if self.sigma == "fixed":
            ls = math.log(self.sigma_value)
        elif self.sigma == "learned_shared":
            ls = float(softclip(self.log_sigma.detach(), self.log_sigma_min))
        elif self.sigma == "optimal_shared" and self.eval_mse > 0:
            ls = float(softclip(0.5 * torch.log(self.eval_mse), self.log_sigma_min))
        elif self._last_log_sigma is not None:
            ls = float(self._last_log_sigma.float().mean())
        else:
            return {}
        if self.sigma in ("optimal_per_image", "per_pixel"):
            return {"log_sigma": ls}
        return {"log_sigma": ls, "effective_beta": 2.0 * math.exp(2.0 * ls)}


def build_likelihood(cfg: dict) -> Likelihood:
    """Likelihood from a config dict {'family': bernoulli|gaussian|categorical, 'sigma', 'sigma_value',
    'log_sigma_min'} (defaults: fixed, 1.0, -6.0). Raises ValueError naming the key for unknown values."""
    family = cfg.get("family", "gaussian")
    if family == "bernoulli":
        return BernoulliLikelihood()
    if family == "categorical":
        return CategoricalLikelihood()
    if family == "gaussian":
        return GaussianLikelihood(
            sigma=cfg.get("sigma", "fixed"),
            sigma_value=cfg.get("sigma_value", 1.0),
            log_sigma_min=cfg.get("log_sigma_min", -6.0),
        )
    raise ValueError(f"likelihood.family: unknown value {family!r} (expected bernoulli, gaussian or categorical)")
