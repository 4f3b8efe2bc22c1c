"""Encoder/decoder architectures registered in ``ARCHITECTURES``; raw outputs only. Encoder: (B, C, H, W) in
[0, 1] -> (B, head_dim); decoder: (N, latent_dim) -> (N, out_channels * C, H, W)."""
from __future__ import annotations

from typing import ClassVar

import torch.nn as nn

from vaebench.registry import Component


class Architecture(Component):
    """Base class: ``name``, ``description``, a typed ``Config`` and ``build``; ``sequence``: it models videos
    (N, T, C, H, W) and builds its model with ``build_vae``."""

    sequence: ClassVar[bool] = False

    def build(self, image_shape: tuple[int, int, int], latent_dim: int, head_dim: int,
              out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) for images (C, H, W); the decoder emits out_channels per image channel."""
        raise NotImplementedError
