"""Fully connected encoder and decoder for images of any size (Kingma & Welling 2014, Appendix C)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import Field, PositiveInt

from vaebench.registry import ARCHITECTURES, ComponentConfig
from vaebench.vae.networks import Architecture


class MLPEncoder(nn.Module):
    """(B, C, H, W) -> (B, head_dim)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden_dims: list[int], head_dim: int):
        super().__init__()
        layers, width = [nn.Flatten()], math.prod(image_shape)
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, head_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """(N, d) -> (N, out_ch*C, H, W); above ``factorise_above`` channels the last layer is factorised into
    ``pixel_features`` per sub-pixel, a shared Linear(pixel_features, out_ch) and a bias per (value, sub-pixel)."""

    def __init__(self, latent_dim: int, hidden_dims: list[int], image_shape: tuple[int, int, int], out_ch: int,
                 pixel_features: int = 16, factorise_above: int = 8):
        super().__init__()
        c, h, w = image_shape
        self.out_shape = (out_ch * c, h, w)
        self.factorised = out_ch > factorise_above
        layers, width = [], latent_dim
        for hd in reversed(hidden_dims):
            layers += [nn.Linear(width, hd), nn.ReLU()]
            width = hd
        if self.factorised:
            self.image_shape, self.pixel_features, self.out_ch = (c, h, w), pixel_features, out_ch
            layers += [nn.Linear(width, pixel_features * c * h * w), nn.ReLU()]
            self.to_logits = nn.Linear(pixel_features, out_ch)
            self.logit_bias = nn.Parameter(torch.zeros(c * h * w, out_ch))
        else:
            layers.append(nn.Linear(width, math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z)
        if self.factorised:
            n, (c, hh, ww) = z.shape[0], self.image_shape
            feats = h.view(n, c * hh * ww, self.pixel_features)
            logits = self.to_logits(feats) + self.logit_bias            # (N, C*H*W, out_ch)
            return logits.view(n, c, hh, ww, self.out_ch).permute(0, 4, 1, 2, 3).reshape(n, *self.out_shape)
        return h.reshape(z.shape[0], *self.out_shape)


@ARCHITECTURES.register
class MLP(Architecture):
    """Encoder: flatten -> [Linear, ReLU] per hidden width -> Linear(head_dim); the decoder mirrors it with
    the widths reversed and ends with Linear(out_channels*C*H*W). Any image size."""

    name = "mlp"
    description = "fully connected encoder and decoder"

    class Config(ComponentConfig):
        hidden_dims: list[PositiveInt] = Field(
            [512, 256], min_length=1, description="Widths of the encoder's hidden layers (the decoder's, reversed).")

    def __init__(self, hidden_dims=(512, 256)):
        hidden_dims = list(hidden_dims)
        if not hidden_dims or not all(isinstance(x, int) and x > 0 for x in hidden_dims):
            raise ValueError(f"architecture.hidden_dims: must be a list of positive ints, got {hidden_dims!r}")
        self.hidden_dims = hidden_dims

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        return (MLPEncoder(image_shape, self.hidden_dims, head_dim),
                MLPDecoder(latent_dim, self.hidden_dims, image_shape, out_channels))
