"""Architecture ``topdown_conv``: a convolutional top-down hierarchical VAE for square images (32x32, 64x64, ...),
built as a ``vaebench.vae.topdown.TopDownVAE``. The design is the "minimal faithful version" of docs/methods.md
10.2, VDVAE's block structure (Child 2021, openai/vdvae vae.py) at a few latent groups: a residual bottom-up
encoder keeps one feature map a_r per resolution r; the top-down path starts from a learned tensor at the top
group's resolution and, per latent group (top first), upsamples the state h (nearest) to the group's resolution,
reads p(z | h) (zero-initialised last layer, so every prior starts at N(0, I)) and q(z | concat(h, a_r)), adds a
1x1 conv of z to h and applies residual blocks; the decoder upsamples h to the image and emits the likelihood's
channels."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.registry import ARCHITECTURES, OBJECTIVES, ComponentConfig, StrictConfig
from vaebench.vae.networks import Architecture
from vaebench.vae.networks.conv import Activation, make_activation


class LatentGroup(StrictConfig):
    """One group of latents z_l: a ``channels`` x ``size`` x ``size`` map."""

    channels: PositiveInt = Field(..., description="Latent channels c_l.")
    size: PositiveInt = Field(..., description="Height = width of the latent map (the image size divided by a "
                                               "power of two).")


class ResBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))), ``width`` channels kept."""

    def __init__(self, width: int, activation: str):
        super().__init__()
        self.net = nn.Sequential(make_activation(activation), nn.Conv2d(width, width, 3, padding=1),
                                 make_activation(activation), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


def _stack(width: int, blocks: int, activation: str) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(width, activation) for _ in range(blocks)))


class BottomUp(nn.Module):
    """x (B, C, S, S) -> [a_l (B, width, s_l, s_l) for each group size s_l, bottom first]: a 3x3 stem, then per
    resolution from S down to the smallest group size ``blocks`` residual blocks and a 2x2 average pool."""

    def __init__(self, channels: int, image_size: int, sizes: list[int], width: int, blocks: int, activation: str):
        super().__init__()
        self.sizes = list(sizes)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.resolutions = [image_size >> i for i in range(int(math.log2(image_size // min(sizes))) + 1)]
        self.stages = nn.ModuleList(_stack(width, blocks, activation) for _ in self.resolutions)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, kept = self.stem(x), {}
        for i, (r, stage) in enumerate(zip(self.resolutions, self.stages)):
            h = stage(h)
            kept[r] = h
            if i < len(self.resolutions) - 1:
                h = self.pool(h)
        return [kept[s] for s in self.sizes]


class Start(nn.Module):
    """The learned initial top-down state (1, width, s, s), zero-initialised, expanded to n rows."""

    def __init__(self, width: int, size: int):
        super().__init__()
        self.h = nn.Parameter(torch.zeros(1, width, size, size))

    def forward(self, n: int) -> torch.Tensor:
        return self.h.expand(int(n), -1, -1, -1)


def _maps_to_flat(t: torch.Tensor, blocks: int) -> torch.Tensor:
    """(N, blocks*c, s, s) -> (N, blocks*c*s*s): each c-channel block flattened channel-major, blocks in order."""
    return torch.cat([b.flatten(1) for b in t.chunk(blocks, dim=1)], dim=1)


class TopDownLayer(nn.Module):
    """One latent group of the top-down path (``TopDownVAE.layers``): c x s x s latents at width-channel state h.
    The top group (``top``) has no prior head: its prior is N(0, I). The posterior head emits ``per_dim`` maps of c channels (flattened block-wise: [mu, logvar] for the diagonal
    family) and ``per_image`` values from h and a_l averaged over positions ([a, log_s] for AR(1)), matching
    ``Posterior.from_head``'s layout of ``per_dim`` blocks of d values followed by ``per_image`` values."""

    def __init__(self, width: int, channels: int, size: int, upsample: int, blocks: int, activation: str,
                 per_dim: int, per_image: int, top: bool):
        super().__init__()
        self.shape, self.per_dim, self.per_image = (channels, size, size), per_dim, per_image
        self.up = nn.Upsample(scale_factor=upsample, mode="nearest") if upsample > 1 else nn.Identity()
        self.prior = None
        if not top:
            self.prior = nn.Sequential(make_activation(activation), nn.Conv2d(width, width, 3, padding=1),
                                       make_activation(activation), nn.Conv2d(width, 2 * channels, 1))
            nn.init.zeros_(self.prior[-1].weight)
            nn.init.zeros_(self.prior[-1].bias)
        self.posterior = nn.Sequential(make_activation(activation), nn.Conv2d(2 * width, width, 3, padding=1),
                                       make_activation(activation))
        self.posterior_maps = nn.Conv2d(width, per_dim * channels, 1)
        self.posterior_global = nn.Linear(width, per_image) if per_image else None
        self.z_in = nn.Conv2d(channels, width, 1)
        self.blocks = _stack(width, blocks, activation)

    def enter(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(h)

    def prior_head(self, h: torch.Tensor) -> torch.Tensor:
        return _maps_to_flat(self.prior(h), 2)

    def posterior_head(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        t = self.posterior(torch.cat([h, a], dim=1))
        head = _maps_to_flat(self.posterior_maps(t), self.per_dim)
        if self.posterior_global is None:
            return head
        return torch.cat([head, self.posterior_global(t.mean((-2, -1)))], dim=1)

    def merge(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(h + self.z_in(z.view(z.shape[0], *self.shape)))


class Decoder(nn.Module):
    """Final state (N, width, s_1, s_1) -> per doubling to the image size: nearest upsampling and ``blocks``
    residual blocks -> act -> 3x3 conv to ``out_channels`` raw channels (N, out_channels, S, S)."""

    def __init__(self, width: int, size: int, image_size: int, out_channels: int, blocks: int, activation: str):
        super().__init__()
        steps = []
        while size < image_size:
            steps += [nn.Upsample(scale_factor=2, mode="nearest"), *_stack(width, blocks, activation)]
            size *= 2
        self.net = nn.Sequential(*steps, make_activation(activation), nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, h):
        return self.net(h)


def head_layout(head_dim: Callable[[int], int], latent_dim: int) -> tuple[int, int]:
    """(per_dim, per_image) with head_dim(d) = per_dim d + per_image for the posterior family's head (diagonal:
    (2, 0); AR(1): (1, 2)). Raises ValueError for a head size that is not of that form."""
    per_dim = head_dim(2) - head_dim(1)
    per_image = head_dim(1) - per_dim
    if per_dim < 1 or per_image < 0 or head_dim(latent_dim) != per_dim * latent_dim + per_image:
        raise ValueError(f"architecture 'topdown_conv': a posterior head of {head_dim(latent_dim)} units for "
                         f"{latent_dim} latents is not per-dimension maps plus per-image values")
    return per_dim, per_image


def _power_of_two_multiple(big: int, small: int) -> bool:
    """Whether big = small 2^n for some n >= 0."""
    ratio, rest = divmod(big, small)
    return rest == 0 and ratio >= 1 and ratio & (ratio - 1) == 0


def _size_problems(groups: list[LatentGroup], latent_dim: int) -> list[tuple[str, str]]:
    problems = []
    sizes = [g.size for g in groups]
    if len(groups) < 2:
        problems.append(("architecture.groups", f"needs >= 2 latent groups, got {len(groups)}"))
    if not all(_power_of_two_multiple(a, b) for a, b in zip(sizes, sizes[1:])):
        problems.append(("architecture.groups", f"each group's size must be the size of the group above times a "
                                                f"power of two (1, 2, 4, ...), from the bottom group (next to x) up; "
                                                f"got {sizes}"))
    total = sum(g.channels * g.size ** 2 for g in groups)
    if latent_dim != total:
        problems.append(("latent_dim", f"must equal the size of the whole latent path, sum of channels x size^2 "
                                       f"over architecture.groups = {total}, got {latent_dim}"))
    return problems


@ARCHITECTURES.register
class TopDownConv(Architecture):
    """Convolutional top-down hierarchical VAE (module docstring) with latent groups ``groups`` (bottom first),
    built as a ``TopDownVAE`` (``build_vae``). Square images whose size is the bottom group's size times a power
    of two (32x32 with groups at 16, 8, 4; 28x28 with groups at 14 and 7). The model's ``latent_dim`` must be the whole path, sum of channels x size^2. Objectives that compare the
    latent sample with N(0, I) (``needs_z``) are rejected: the prior of the path is hierarchical."""

    name = "topdown_conv"
    description = "convolutional top-down hierarchical VAE (VDVAE-style blocks; latent groups per resolution)"

    class Config(ComponentConfig):
        groups: list[LatentGroup] = Field(
            [{"channels": 8, "size": 16}, {"channels": 8, "size": 8}, {"channels": 8, "size": 4}], min_length=2,
            validate_default=True,
            description="Latent groups z_1..z_L, bottom (next to x) first, each {channels, size}: each size is the "
                        "size of the group above times a power of two, the image size the bottom group's times a "
                        "power of two; latent_dim must be sum of channels x size^2.")
        width: PositiveInt = Field(64, description="Channels of every bottom-up and top-down feature map.")
        blocks: NonNegativeInt = Field(1, description="Residual blocks per resolution on the bottom-up path, after "
                                                      "each latent group and per decoder doubling.")
        activation: Activation = Field("elu", description="Activation inside the residual blocks and heads.")

    def __init__(self, **settings):
        cfg = self.Config(name=self.name, **settings)
        self.groups, self.width, self.blocks, self.activation = list(cfg.groups), cfg.width, cfg.blocks, cfg.activation
        problems = _size_problems(self.groups, sum(g.channels * g.size ** 2 for g in self.groups))
        if problems:
            raise ValueError(f"{problems[0][0]}: {problems[0][1]}")

    @classmethod
    def check_model(cls, model):
        groups = [LatentGroup(**g) if isinstance(g, dict) else g for g in model.architecture.groups]
        problems = _size_problems(groups, model.latent_dim)
        if OBJECTIVES.get(model.objective.name).needs_z:
            problems.append(("objective.name", f"{model.objective.name!r} compares the latent sample with N(0, I), "
                                               f"but the prior of the {cls.name} latent path is hierarchical"))
        return problems

    def networks(self, image_shape: tuple[int, int, int], latent_dim: int, head_dim: Callable[[int], int],
                 out_channels: int):
        """(bottom_up, start, layers, decoder, z_shapes) of ``TopDownVAE``. Raises ValueError for a latent_dim other
        than the path's size, non-square images, or an image size that is not a power of two times a group size."""
        problems = _size_problems(self.groups, latent_dim)
        if problems:
            raise ValueError(f"{problems[-1][0]}: {problems[-1][1]}")
        c, h, w = image_shape
        sizes = [g.size for g in self.groups]
        if h != w or not _power_of_two_multiple(h, sizes[0]):
            raise ValueError(f"architecture 'topdown_conv': images must be square, their size the bottom group's "
                             f"size {sizes[0]} times a power of two; got {h}x{w}")
        width, blocks, act = self.width, self.blocks, self.activation
        bottom_up = BottomUp(c, h, sizes, width, blocks, act)
        layers = nn.ModuleList()
        for i, g in enumerate(self.groups):
            above = sizes[i + 1] if i + 1 < len(sizes) else g.size
            d = g.channels * g.size ** 2
            per_dim, per_image = head_layout(head_dim, d)
            layers.append(TopDownLayer(width, g.channels, g.size, g.size // above, blocks, act, per_dim, per_image,
                                       top=i == len(sizes) - 1))
        decoder = Decoder(width, sizes[0], h, out_channels * c, blocks, act)
        z_shapes = [(g.channels, g.size, g.size) for g in self.groups]
        return bottom_up, Start(width, sizes[-1]), layers, decoder, z_shapes

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        """Every network, as (inference ModuleList [bottom_up, layers], generative ModuleList [start, decoder]),
        with the diagonal family's heads: for the size checks of ``vaebench.validation``; the model is built by
        ``build_vae``. Raises ValueError as ``networks``."""
        bottom_up, start, layers, decoder, _ = self.networks(tuple(image_shape), latent_dim, lambda d: 2 * d,
                                                             out_channels)
        return nn.ModuleList([bottom_up, layers]), nn.ModuleList([start, decoder])

    def build_vae(self, image_shape, latent_dim, posterior, likelihood, objective):
        """The ``TopDownVAE`` (called by ``vaebench.vae.model.build_model``). Raises ValueError as ``networks``."""
        from vaebench.vae.topdown import TopDownVAE

        bottom_up, start, layers, decoder, z_shapes = self.networks(
            tuple(image_shape), latent_dim, posterior.head_dim, likelihood.out_channels)
        return TopDownVAE(bottom_up, start, layers, decoder, posterior, likelihood, objective, z_shapes,
                          image_shape)
