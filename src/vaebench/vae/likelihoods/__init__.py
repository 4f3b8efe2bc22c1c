"""Decoder likelihoods p(x|z), one module per family, registered in ``LIKELIHOODS`` (Gaussian sigma modes:
Rybkin et al. 2021). ``x`` is (B, C, H, W) in the model's data space, the decoder output ``out`` is
(*S, out_channels*C, H, W) laid out as ``out.view(*S, out_channels, C, H, W)`` with S = (B,) or (k, B);
per-image results have shape S, in nats."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from vaebench.registry import Component

DATA_SPACES: dict[str, dict[str, str]] = {
    "binarised": {
        "treatment": "dynamically binarised: x ~ Bernoulli(pixel/255) (test set binarised once, fixed seed)",
        "likelihood_of": "binarised test images (a likelihood of the binarised data, not of the 8-bit images)",
    },
    "dequantised": {
        "treatment": "uniformly dequantised: (pixel + u)/256, u ~ U[0,1) (test set dequantised once, fixed seed)",
        "likelihood_of": "8-bit test images (upper bound on -log P via dequantisation: continuous NLL + D ln 256)",
    },
    "discrete": {
        "treatment": "integer intensities 0..255 (no dequantisation)",
        "likelihood_of": "8-bit test images (exact discrete likelihood)",
    },
}


def check_uint8(x_uint8: torch.Tensor) -> None:
    """Raise ValueError unless ``x_uint8`` is a (B, C, H, W) uint8 tensor."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise ValueError(f"preprocess expects a (B, C, H, W) uint8 tensor, got {x_uint8.dtype} {tuple(x_uint8.shape)}")


def split_channels(out: torch.Tensor, out_channels: int) -> torch.Tensor:
    """(*S, out_channels*C, H, W) -> (*S, out_channels, C, H, W). Raises ValueError on a channel mismatch."""
    *lead, oc, h, w = out.shape
    if oc % out_channels:
        raise ValueError(f"decoder output has {oc} channels, not a multiple of out_channels={out_channels}")
    return out.reshape(*lead, out_channels, oc // out_channels, h, w)


class Likelihood(nn.Module, Component):
    """Base class of every decoder likelihood; the pipeline reads its class attributes (``data_space`` is a
    ``DATA_SPACES`` key; ``valid_density`` False when the test number is not a normalised density)."""

    family: ClassVar[str]
    sigma_mode: ClassVar[str | None] = None
    data_space: ClassVar[str]
    valid_density: ClassVar[bool] = True
    supports_sse: ClassVar[bool] = True
    out_channels: int = 1

    @classmethod
    def metadata(cls) -> dict:
        """The class's metadata as plain fields (recorded in metrics.json)."""
        space = DATA_SPACES[cls.data_space]
        return {
            "likelihood": cls.name,
            "likelihood_family": cls.family,
            "sigma_mode": cls.sigma_mode,
            "data_space": cls.data_space,
            "data_treatment": space["treatment"],
            "likelihood_of": space["likelihood_of"],
            "valid_density": cls.valid_density,
            "likelihood_description": cls.description,
        }

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the model's data space (same device)."""
        raise NotImplementedError

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Data-space x -> float intensities in [0, 1] (encoder input, SSE constraint), shape (B, C, H, W)."""
        return x.float()

    def log_prob(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        """log p(x|z), nats/image: x (B,C,H,W), out (*S, out_channels*C, H, W) -> (*S,); ``accumulate``: train step."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder mean in [0, 1]: (*S, out_channels*C, H, W) -> (*S, C, H, W)."""
        raise NotImplementedError

    def draw(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """x ~ p(x|z) on [0, 1]: (*S, out_channels*C, H, W) -> (*S, C, H, W); None if not samplable from z alone."""
        return None

    def extra_log_probs(self, x: torch.Tensor, x_uint8: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Further likelihoods of the same output by column name, {name: (*S,) nats/image}; default none."""
        return {}

    def discrete_offset_nats(self, D: int) -> float:
        """Nats to add to -log p(x) for a bound on the 8-bit NLL."""
        return 0.0

    def tracked_scalars(self) -> dict[str, float]:
        """Scalars worth logging every epoch (e.g. log_sigma). Default: none."""
        return {}

    def end_epoch(self) -> None:
        """Called once at the end of every training epoch. Default: nothing."""


class DiscreteLikelihood(Likelihood):
    """Base of the exact 8-bit likelihoods (data space ``discrete``): data are long intensities 0..255
    (B, C, H, W); ``to_unit`` is x / 255; no SSE constraint."""

    data_space: ClassVar[str] = "discrete"
    supports_sse: ClassVar[bool] = False

    def preprocess(self, x_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> long (B, C, H, W), the same values. Raises ValueError for another dtype or rank."""
        check_uint8(x_uint8)
        return x_uint8.long()

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Long intensities (B, C, H, W) -> float x / 255."""
        return x.float() / 255.0
