"""Encoder and decoder networks. They output raw numbers only: the posterior reads the encoder head, the
likelihood applies the output nonlinearity (sigmoid, softmax) to the decoder output.

    encoder: (B, C, H, W) float -> (B, head_dim)
    decoder: (N, latent_dim)    -> (N, out_ch * C, H, W)   (out_ch = likelihood.out_channels)

Architectures:
* ``mlp``    flatten -> [Linear, ReLU] per hidden_dims -> Linear(head_dim); decoder mirrors it with the
             hidden dims reversed and ends with Linear(out_ch*C*H*W). Any image size.
* ``conv28`` the sigma-VAE reference conv net for 28x28 images (svae-pt ``model.py``, methods.md 2.4).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class MLPEncoder(nn.Module):
    """Flatten -> Linear/ReLU for each width in hidden_dims -> Linear(head_dim). (B,C,H,W) -> (B, head_dim)."""

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
    """Linear/ReLU for each width in reversed(hidden_dims) -> Linear(out_ch*C*H*W) -> reshape.
    (N, d) -> (N, out_ch*C, H, W).

    For many output channels per sub-pixel (the 256-way categorical decoder) a dense last layer would
    need hidden*256*D weights (80M for MNIST); instead the MLP emits ``pixel_features`` features per
    sub-pixel and one Linear(pixel_features -> out_ch), shared by all sub-pixels, maps them to logits,
    plus a learned bias per (value, sub-pixel) so each sub-pixel keeps its own marginal. Used when
    out_ch > ``factorise_above``.
    """

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
            logits = self.to_logits(feats) + self.logit_bias            # (N, C*H*W, out_ch), classes last in memory
            # (N, out_ch*C, H, W) as a view for C = 1 (the likelihood moves the classes back last for free)
            return logits.view(n, c, hh, ww, self.out_ch).permute(0, 4, 1, 2, 3).reshape(n, *self.out_shape)
        return h.reshape(z.shape[0], *self.out_shape)


class Conv28Encoder(nn.Module):
    """sigma-VAE conv encoder (methods.md 2.4): Conv(C->32,k3,s1,p1) ReLU, Conv(32->64,k4,s2,p1) ReLU (14x14),
    Conv(64->128,k5,s2,p2) ReLU (7x7), flatten 6272 -> Linear(head_dim). (B, C, 28, 28) -> (B, head_dim)."""

    def __init__(self, in_channels: int, head_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 5, 2, 2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, head_dim),
        )

    def forward(self, x):
        return self.net(x)


class Conv28Decoder(nn.Module):
    """sigma-VAE conv decoder (methods.md 2.4): Linear(d->6272) -> 128x7x7 -> ConvT(128->64,k6,s2,p2) ReLU (14x14)
    -> ConvT(64->32,k6,s2,p2) ReLU (28x28) -> ConvT(32->out_channels,k5,s1,p2). (N, d) -> (N, out_channels, 28, 28).
    The reference's final Sigmoid belongs to the likelihood here."""

    def __init__(self, latent_dim: int, out_channels: int):
        super().__init__()
        self.fc = nn.Linear(latent_dim, 128 * 7 * 7)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 6, 2, 2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, 2, 2), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 5, 1, 2),
        )

    def forward(self, z):
        return self.net(self.fc(z).view(z.shape[0], 128, 7, 7))


def build_networks(
    architecture: str,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    head_dim: int,
    out_ch: int,
    hidden_dims: list[int] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) for ``architecture`` ('mlp' | 'conv28').

    Raises ValueError naming 'architecture' for an unknown value or conv28 on non-28x28 images, and naming
    'hidden_dims' for an invalid list.
    """
    c, h, w = image_shape
    if architecture == "mlp":
        hidden_dims = list(hidden_dims if hidden_dims is not None else [512, 256])
        if not all(isinstance(x, int) and x > 0 for x in hidden_dims):
            raise ValueError(f"hidden_dims: must be a list of positive ints, got {hidden_dims!r}")
        return (MLPEncoder(image_shape, hidden_dims, head_dim),
                MLPDecoder(latent_dim, hidden_dims, image_shape, out_ch))
    if architecture == "conv28":
        if (h, w) != (28, 28):
            raise ValueError(f"architecture: 'conv28' needs 28x28 images, got {h}x{w}")
        return Conv28Encoder(c, head_dim), Conv28Decoder(latent_dim, out_ch * c)
    raise ValueError(f"architecture: unknown value {architecture!r} (expected 'mlp' or 'conv28')")
