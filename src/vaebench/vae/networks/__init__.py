"""Encoder/decoder architectures, one module per architecture, each class registered in
``vaebench.registry.ARCHITECTURES``. Networks output raw numbers only: the posterior reads the encoder
head and the likelihood applies the output nonlinearity (sigmoid, softmax) to the decoder output.

    encoder: (B, C, H, W) float in [0, 1] -> (B, head_dim)
    decoder: (N, latent_dim)              -> (N, out_channels * C, H, W)

An architecture class is built from its typed config and ``build(image_shape, latent_dim, head_dim,
out_channels)`` returns ``(encoder, decoder)``.
"""
from __future__ import annotations

import torch.nn as nn

from vaebench.registry import Component


class Architecture(Component):
    """Base class: ``name``, ``description``, a typed ``Config`` and ``build``."""

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, head_dim: int,
              out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) for images (C, H, W); the decoder emits out_channels per image channel."""
        raise NotImplementedError
