"""Gaussian decoders on dequantised data y = (x_uint8 + u)/256, one class per way of obtaining sigma (Rybkin,
Daniilidis, Levine 2021, sigma-VAE, eq. 3; log_sigma soft-clipped as in their Section 3.1). -log p(y) + D ln 256
bounds the 8-bit NLL (Theis et al. 2016, Section 3.1); the mean is sigmoid(first output channel group)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import Field

from vaebench.registry import LIKELIHOODS, ComponentConfig
from vaebench.vae.functional import LOG_256, LOG_2PI, log_discretised_normal, rand_like, randn, softclip
from vaebench.vae.likelihoods import Likelihood, check_uint8, split_channels


class Gaussian(Likelihood):
    """What every sigma mode shares; a subclass implements ``log_sigma``, broadcastable to (*S, C, H, W)."""

    family = "gaussian"
    data_space = "dequantised"

    class Config(ComponentConfig):
        log_sigma_min: float = Field(-6.0, description="Soft lower clip of log_sigma (nats).")

    def __init__(self, log_sigma_min: float = -6.0):
        super().__init__()
        self.log_sigma_min = float(log_sigma_min)

    def preprocess(self, x_uint8, generator=None):
        check_uint8(x_uint8)
        return (x_uint8.float() + rand_like(x_uint8, generator)) / 256.0

    def mean(self, out):
        return torch.sigmoid(split_channels(out, self.out_channels)[..., 0, :, :, :])

    def discrete_offset_nats(self, D):
        return D * LOG_256

    def log_sigma(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        """log sigma used by ``log_prob``: shape (), (*S, 1, 1, 1) or (*S, C, H, W) (nats)."""
        raise NotImplementedError

    def sample_log_sigma(self, out: torch.Tensor) -> torch.Tensor | None:
        """log sigma of p(x|z) without data (for draws), broadcastable to (*S, C, H, W); None if it needs x."""
        return None

    def draw(self, out, generator=None):
        log_sigma = self.sample_log_sigma(out)
        if log_sigma is None:
            return None
        mean = self.mean(out)
        eps = randn(tuple(mean.shape), mean, generator)
        return (mean + torch.exp(log_sigma) * eps).clamp(0.0, 1.0)

    def extra_log_probs(self, x, x_uint8, out):
        """{'discretised': (*S,) log P(x_uint8 | z), nats} with ``log_prob``'s sigma (Salimans et al. 2017, eq. 2);
        {} for a subclass of another family."""
        if self.family != Gaussian.family:
            return {}
        log_p = log_discretised_normal(x_uint8, self.mean(out), self.log_sigma(x, out))
        return {"discretised": log_p.sum((-3, -2, -1))}

    def log_prob(self, x, out, accumulate=False):
        mean = self.mean(out)
        log_sigma = self.log_sigma(x, out, accumulate)
        nll = (x - mean).pow(2) * torch.exp(-2.0 * log_sigma) / 2.0 + log_sigma + 0.5 * LOG_2PI
        return -nll.sum((-3, -2, -1))

    @staticmethod
    def shared_scalars(log_sigma: float) -> dict[str, float]:
        """{'log_sigma', 'effective_beta' = 2 sigma^2} (the KL weight of "SSE/2 + beta KL" that sigma amounts to)."""
        return {"log_sigma": log_sigma, "effective_beta": 2.0 * math.exp(2.0 * log_sigma)}


@LIKELIHOODS.register
class GaussianFixed(Gaussian):
    """A constant sigma (sigma = 1 is the plain Gaussian VAE; no clip)."""

    name = "gaussian_fixed"
    sigma_mode = "fixed"
    description = "Gaussian, fixed sigma"

    class Config(ComponentConfig):
        sigma: float = Field(1.0, gt=0, description="The decoder's standard deviation on the [0, 1] scale.")

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"likelihood.sigma: must be > 0, got {sigma!r}")
        self.sigma = float(sigma)

    def log_sigma(self, x, out, accumulate=False):
        return out.new_full((), math.log(self.sigma))

    def sample_log_sigma(self, out):
        return self.log_sigma(None, out)

    def tracked_scalars(self):
        return self.shared_scalars(math.log(self.sigma))


@LIKELIHOODS.register
class GaussianLearnedShared(Gaussian):
    """One learned scalar ``log_sigma`` (an nn.Parameter, float32, init 0) shared by every pixel."""

    name = "gaussian_learned_shared"
    sigma_mode = "learned_shared"
    description = "Gaussian, one learned sigma shared by all pixels"

    def __init__(self, log_sigma_min: float = -6.0):
        super().__init__(log_sigma_min)
        self.raw_log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def log_sigma(self, x, out, accumulate=False):
        return softclip(self.raw_log_sigma, self.log_sigma_min)

    def sample_log_sigma(self, out):
        return self.log_sigma(None, out)

    def tracked_scalars(self):
        return self.shared_scalars(float(softclip(self.raw_log_sigma.detach(), self.log_sigma_min)))


@LIKELIHOODS.register
class GaussianOptimalShared(Gaussian):
    """sigma*^2 = MSE over the whole batch (all images, samples and pixels): the maximum-likelihood variance
    given the mean (the paper's eq. 5 writes sigma* = MSE; the variance is the MSE). Not detached.

    In eval mode sigma^2 is ``eval_mse``, the pooled MSE of the images seen since the last ``end_epoch`` (after
    training: one pass over the training images with the final weights, ``VAE.calibrate``); before any
    ``end_epoch`` the current batch MSE is used. A test number is then a normalised density of the test image.
    """

    name = "gaussian_optimal_shared"
    sigma_mode = "optimal_shared"
    description = "Gaussian, sigma^2 = batch MSE (analytic optimum), frozen training average at test time"

    def __init__(self, log_sigma_min: float = -6.0):
        super().__init__(log_sigma_min)
        self.register_buffer("sse_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("element_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("eval_mse", torch.full((), -1.0, dtype=torch.float64))

    def log_sigma(self, x, out, accumulate=False):
        sq = (x - self.mean(out)).pow(2)
        mse = sq.mean()
        if accumulate:
            with torch.no_grad():
                self.sse_sum += sq.detach().double().sum()
                self.element_count += sq.numel()
        if not self.training and self.eval_mse > 0:
            mse = self.eval_mse.to(out.dtype)
        return softclip(0.5 * torch.log(mse), self.log_sigma_min)

    def sample_log_sigma(self, out):
        if self.eval_mse <= 0:
            return None
        return softclip(0.5 * torch.log(self.eval_mse.to(out.dtype)), self.log_sigma_min)

    def end_epoch(self):
        """Freeze the pooled MSE since the last call as ``eval_mse`` and reset the sums."""
        if self.element_count > 0:
            self.eval_mse.copy_(self.sse_sum / self.element_count)
            self.sse_sum.zero_()
            self.element_count.zero_()

    def tracked_scalars(self):
        if self.eval_mse > 0:
            return self.shared_scalars(float(softclip(0.5 * torch.log(self.eval_mse), self.log_sigma_min)))
        return {}


@LIKELIHOODS.register
class GaussianOptimalPerImage(Gaussian):
    """sigma_i^2 = MSE of image i over its own C, H, W (same in training and evaluation). At test time
    sigma comes from the test image itself, so its "likelihood" is not a normalised density."""

    name = "gaussian_optimal_per_image"
    sigma_mode = "optimal_per_image"
    valid_density = False
    description = "Gaussian, sigma_i^2 = MSE of each image (analytic optimum per image)"

    def log_sigma(self, x, out, accumulate=False):
        mse = (x - self.mean(out)).pow(2).mean((-3, -2, -1), keepdim=True)
        return softclip(0.5 * torch.log(mse), self.log_sigma_min)


@LIKELIHOODS.register
class GaussianPerPixel(Gaussian):
    """The decoder emits a second channel group of raw log_sigma, one per sub-pixel (out_channels = 2)."""

    name = "gaussian_per_pixel"
    sigma_mode = "per_pixel"
    description = "Gaussian, a sigma per pixel output by the decoder"
    out_channels = 2

    def log_sigma(self, x, out, accumulate=False):
        return softclip(split_channels(out, 2)[..., 1, :, :, :], self.log_sigma_min)

    def sample_log_sigma(self, out):
        return self.log_sigma(None, out)
