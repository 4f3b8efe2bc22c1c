"""The convolutional network of the sigma-VAE reference code for 28x28 images (Rybkin et al. 2021;
github.com/orybkin/sigma-vae-pytorch, model.py)."""
from __future__ import annotations

import torch.nn as nn

from vaebench.registry import ARCHITECTURES
from vaebench.vae.networks import Architecture


class Conv28Encoder(nn.Module):
    """Conv(C->32,k3,s1,p1) ReLU, Conv(32->64,k4,s2,p1) ReLU (14x14), Conv(64->128,k5,s2,p2) ReLU (7x7),
    flatten 6272 -> Linear(head_dim). (B, C, 28, 28) -> (B, head_dim)."""

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
    """Linear(d->6272) -> 128x7x7 -> ConvT(128->64,k6,s2,p2) ReLU (14x14) -> ConvT(64->32,k6,s2,p2) ReLU
    (28x28) -> ConvT(32->out_channels,k5,s1,p2). (N, d) -> (N, out_channels, 28, 28). The reference's
    final Sigmoid belongs to the likelihood here."""

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
    """sigma-VAE reference conv net for 28x28 images (no settings). Raises ValueError at build time for
    other image sizes."""

    name = "conv28"
    description = "sigma-VAE reference convolutional network (28x28)"

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        c, h, w = image_shape
        if (h, w) != (28, 28):
            raise ValueError(f"architecture: 'conv28' needs 28x28 images, got {h}x{w}")
        return Conv28Encoder(c, head_dim), Conv28Decoder(latent_dim, out_channels * c)
