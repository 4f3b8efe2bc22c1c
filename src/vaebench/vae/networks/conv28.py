"""The convolutional network of the sigma-VAE reference code for 28x28 images (Rybkin et al. 2021;
github.com/orybkin/sigma-vae-pytorch, model.py)."""
from __future__ import annotations

import torch.nn as nn

from vaebench.registry import ARCHITECTURES
from vaebench.vae.networks import Architecture


class Conv28Encoder(nn.Module):
    """(B, C, 28, 28) -> (B, head_dim)."""

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
    """(N, d) -> (N, out_channels, 28, 28), raw outputs (the reference's final Sigmoid is the likelihood's)."""

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


@ARCHITECTURES.register
class Conv28(Architecture):
    """sigma-VAE reference conv net for 28x28 images; ``build`` raises ValueError for other sizes."""

    name = "conv28"
    description = "sigma-VAE reference convolutional network (28x28)"

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        c, h, w = image_shape
        if (h, w) != (28, 28):
            raise ValueError(f"architecture: 'conv28' needs 28x28 images, got {h}x{w}")
        return Conv28Encoder(c, head_dim), Conv28Decoder(latent_dim, out_channels * c)
