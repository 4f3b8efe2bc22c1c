"""Architectures ``svg_dcgan64`` and ``svg_vgg64``: SVG-LP's networks for 64x64 frames (Denton & Fergus 2018,
Section 3; svg-code models/dcgan_64.py, models/vgg_64.py and models/lstm.py, docs/methods.md 11.1), built as a
``vaebench.vae.sequence.SVGLP``; they differ in the frame encoder and decoder only.

DCGAN (svg-code's SM-MNIST network): 4 x [Conv k4 s2 p1, BatchNorm, LeakyReLU 0.2] C -> nf -> 2nf -> 4nf -> 8nf
(64 -> 4 px), Conv k4 -> g_dim, BatchNorm, tanh; the decoder mirrors it with ConvTranspose. VGG (svg-code's BAIR
network): blocks of [Conv 3x3, BatchNorm, LeakyReLU 0.2] with nf x [1, 1], 2nf x [1, 1], 4nf x [1, 1, 1],
8nf x [1, 1, 1] channels at 64, 32, 16 and 8 px, 2x2 max-pooling between them, then Conv k4 -> g_dim, BatchNorm,
tanh; the decoder mirrors it with nearest x2 upsampling. Both keep the four block outputs as skips, concatenated
at the decoder's matching scale, and end in the likelihood's raw output channels (svg-code ends in a sigmoid,
which here is the likelihood's mean). LSTMs: Linear embedding, stacked LSTMCells, then tanh(Linear) (the frame
predictor) or Linear mu and Linear logvar (the posterior and the learned prior). Weights N(0, 0.02), biases 0,
BatchNorm weights N(1, 0.02) (svg-code utils.init_weights)."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
from pydantic import Field, PositiveInt

from vaebench.registry import ARCHITECTURES, OBJECTIVES, POSTERIORS, ComponentConfig
from vaebench.vae.networks import Architecture

FRAME_SIZE = 64


def _block(conv: nn.Conv2d | nn.ConvTranspose2d, last: nn.Module | None = None) -> nn.Sequential:
    """``conv``, BatchNorm over its output channels, then ``last`` (default LeakyReLU 0.2): svg-code's layer."""
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.LeakyReLU(0.2) if last is None else last)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return _block(nn.Conv2d(c_in, c_out, 4, 2, 1))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return _block(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1))


def _vgg(c_in: int, c_out: int) -> nn.Sequential:
    return _block(nn.Conv2d(c_in, c_out, 3, 1, 1))


def _encoding(nf: int, g_dim: int) -> nn.Sequential:
    """The encoders' last layer: 8nf x 4 x 4 -> g_dim x 1 x 1, BatchNorm, tanh."""
    return _block(nn.Conv2d(8 * nf, g_dim, 4, 1, 0), nn.Tanh())


def _decoding(nf: int, g_dim: int) -> nn.Sequential:
    """The decoders' first layer: g_dim x 1 x 1 -> 8nf x 4 x 4, BatchNorm, LeakyReLU."""
    return _block(nn.ConvTranspose2d(g_dim, 8 * nf, 4, 1, 0))


class FrameEncoder(nn.Module):
    """Frames (N, C, 64, 64) in [0, 1] -> (h (N, g_dim) in (-1, 1), skips [(N, nf, 32, 32), (N, 2nf, 16, 16),
    (N, 4nf, 8, 8), (N, 8nf, 4, 4)])."""

    def __init__(self, channels: int, g_dim: int, nf: int):
        super().__init__()
        self.blocks = nn.ModuleList([_down(channels, nf), _down(nf, 2 * nf), _down(2 * nf, 4 * nf),
                                     _down(4 * nf, 8 * nf)])
        self.last = _encoding(nf, g_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        return self.last(x).flatten(1), skips


class FrameDecoder(nn.Module):
    """(g (N, g_dim), skips as ``FrameEncoder`` returns them) -> raw output (N, out_channels*C, 64, 64)."""

    def __init__(self, out_channels: int, g_dim: int, nf: int):
        super().__init__()
        self.first = _decoding(nf, g_dim)
        self.blocks = nn.ModuleList([_up(16 * nf, 4 * nf), _up(8 * nf, 2 * nf), _up(4 * nf, nf)])
        self.last = nn.ConvTranspose2d(2 * nf, out_channels, 4, 2, 1)

    def forward(self, g: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        d = self.first(g[:, :, None, None])
        for block, skip in zip(self.blocks, skips[:0:-1]):
            d = block(torch.cat([d, skip], 1))
        return self.last(torch.cat([d, skips[0]], 1))


class VggFrameEncoder(nn.Module):
    """Frames (N, C, 64, 64) in [0, 1] -> (h (N, g_dim) in (-1, 1), skips [(N, nf, 64, 64), (N, 2nf, 32, 32),
    (N, 4nf, 16, 16), (N, 8nf, 8, 8)])."""

    def __init__(self, channels: int, g_dim: int, nf: int):
        super().__init__()
        widths = [[nf, nf], [2 * nf, 2 * nf], [4 * nf] * 3, [8 * nf] * 3]
        blocks, c = [], channels
        for block in widths:
            layers = []
            for w in block:
                layers.append(_vgg(c, w))
                c = w
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.last = _encoding(nf, g_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        return self.last(self.pool(x)).flatten(1), skips


class VggFrameDecoder(nn.Module):
    """(g (N, g_dim), skips as ``VggFrameEncoder`` returns them) -> raw output (N, out_channels, 64, 64)."""

    def __init__(self, out_channels: int, g_dim: int, nf: int):
        super().__init__()
        self.first = _decoding(nf, g_dim)
        self.blocks = nn.ModuleList([
            nn.Sequential(_vgg(16 * nf, 8 * nf), _vgg(8 * nf, 8 * nf), _vgg(8 * nf, 4 * nf)),
            nn.Sequential(_vgg(8 * nf, 4 * nf), _vgg(4 * nf, 4 * nf), _vgg(4 * nf, 2 * nf)),
            nn.Sequential(_vgg(4 * nf, 2 * nf), _vgg(2 * nf, nf)),
            nn.Sequential(_vgg(2 * nf, nf), nn.ConvTranspose2d(nf, out_channels, 3, 1, 1))])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, g: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        d = self.first(g[:, :, None, None])
        for block, skip in zip(self.blocks, skips[::-1]):
            d = block(torch.cat([self.up(d), skip], 1))
        return d


class LSTMStack(nn.Module):
    """SVG's ``lstm`` / ``gaussian_lstm``: input (N, in_features) -> Linear(hidden) -> ``layers`` LSTMCells(hidden)
    -> the heads: one Linear per entry of ``heads`` (out_features each), tanh applied when ``tanh``. ``step`` runs
    one time step from a state (None: zeros); ``forward`` runs a whole sequence (N, T, in_features) from zeros."""

    def __init__(self, in_features: int, hidden: int, layers: int, out_features: int, heads: int, tanh: bool):
        super().__init__()
        self.hidden, self.tanh = hidden, tanh
        self.embed = nn.Linear(in_features, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        self.heads = nn.ModuleList(nn.Linear(hidden, out_features) for _ in range(heads))

    def step(self, x: torch.Tensor, state: list | None) -> tuple[list[torch.Tensor], list]:
        """One step: x (N, in_features) -> ([head outputs (N, out_features)], new state)."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden)
            state = [(zeros, zeros)] * len(self.cells)
        h, new_state = self.embed(x), []
        for cell, s in zip(self.cells, state):
            hc = cell(h, s)
            new_state.append(hc)
            h = hc[0]
        outs = [head(h) for head in self.heads]
        return ([torch.tanh(o) for o in outs] if self.tanh else outs), new_state

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, T, in_features) -> [head outputs (N, T, out_features)], from a zero state."""
        state, outs = None, []
        for t in range(x.shape[1]):
            o, state = self.step(x[:, t], state)
            outs.append(o)
        return [torch.stack(parts, 1) for parts in zip(*outs)]


def init_weights(module: nn.Module) -> None:
    """svg-code ``utils.init_weights``: conv and linear weights N(0, 0.02), biases 0; BatchNorm weights N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@ARCHITECTURES.register
class SVGDcgan64(Architecture):
    """SVG-LP (learned prior) with the DCGAN 64x64 frame networks; ``latent_dim`` is z_dim, per frame."""

    name = "svg_dcgan64"
    description = "SVG-LP sequence VAE (DCGAN 64x64 frame encoder/decoder with skips, LSTM predictor, posterior, prior)"
    sequence: ClassVar[bool] = True

    class Config(ComponentConfig):
        g_dim: PositiveInt = Field(128, description="Frame encoding size (SVG: 128).")
        rnn_size: PositiveInt = Field(256, description="Hidden units of every LSTM (SVG: 256).")
        predictor_layers: PositiveInt = Field(2, description="LSTM layers of the frame predictor (SVG: 2).")
        posterior_layers: PositiveInt = Field(1, description="LSTM layers of the posterior q(z_t | x_1..t) (SVG: 1).")
        prior_layers: PositiveInt = Field(1, description="LSTM layers of the learned prior p(z_t | x_1..t-1) (SVG: "
                                                         "1).")
        filters: PositiveInt = Field(64, description="Channels of the first encoder block, nf (SVG: 64); the "
                                                     "blocks have nf, 2nf, 4nf, 8nf.")
        n_past: int = Field(5, ge=1, description="Conditioning frames (SVG: 5 on SM-MNIST, 2 on BAIR); predictions "
                                                 "use the skips of frame n_past - 1 (1-based), as svg-code.")
        last_frame_skip: bool = Field(False, description="Take the skips from the previous frame at every step "
                                                         "(svg-code --last_frame_skip).")

    def __init__(self, **settings):
        cfg = self.Config(name=self.name, **settings)
        self.cfg = cfg
        if cfg.n_past < 2 and not cfg.last_frame_skip:
            raise ValueError("architecture.n_past: must be >= 2 unless last_frame_skip (the skips of frame n_past - 1 "
                             "feed every prediction)")

    def frame_networks(self, channels: int, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(frame encoder, frame decoder) for frames of ``channels`` channels, the decoder emitting
        ``out_channels``."""
        return (FrameEncoder(channels, self.cfg.g_dim, self.cfg.filters),
                FrameDecoder(out_channels, self.cfg.g_dim, self.cfg.filters))

    @classmethod
    def check_model(cls, model):
        problems = []
        from vaebench.vae.posteriors.diagonal import DiagonalGaussian

        if not issubclass(POSTERIORS.get(model.posterior.name), DiagonalGaussian):
            problems.append(("posterior.name", f"{cls.name} infers a diagonal Gaussian q(z_t | x_1..t) per frame; "
                                               f"got {model.posterior.name!r}"))
        if OBJECTIVES.get(model.objective.name).needs_z:
            problems.append(("objective.name", f"{model.objective.name!r} compares the latent sample with N(0, I), "
                                               f"but the prior of {cls.name} is the learned p(z_t | x_1..t-1)"))
        return problems

    def networks(self, image_shape: tuple[int, int, int], latent_dim: int, out_channels: int):
        """(frame_encoder, frame_decoder, predictor, posterior, prior), initialised as svg-code. Raises ValueError
        for frames other than C x 64 x 64."""
        c, h, w = image_shape
        if (h, w) != (FRAME_SIZE, FRAME_SIZE):
            raise ValueError(f"architecture '{self.name}': frames must be {FRAME_SIZE}x{FRAME_SIZE}, got {h}x{w}")
        cfg = self.cfg
        nets = (*self.frame_networks(c, out_channels * c),
                LSTMStack(cfg.g_dim + latent_dim, cfg.rnn_size, cfg.predictor_layers, cfg.g_dim, 1, tanh=True),
                LSTMStack(cfg.g_dim, cfg.rnn_size, cfg.posterior_layers, latent_dim, 2, tanh=False),
                LSTMStack(cfg.g_dim, cfg.rnn_size, cfg.prior_layers, latent_dim, 2, tanh=False))
        for net in nets:
            net.apply(init_weights)
        return nets

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        """(encoder side [frame encoder, posterior, prior], decoder side [predictor, frame decoder]) for the size
        checks of ``vaebench.validation``; the model is built by ``build_vae``. Raises ValueError as ``networks``."""
        enc, dec, pred, post, prior = self.networks(tuple(image_shape), latent_dim, out_channels)
        return nn.ModuleList([enc, post, prior]), nn.ModuleList([pred, dec])

    def build_vae(self, image_shape, latent_dim, posterior, likelihood, objective):
        """The ``SVGLP`` (called by ``vaebench.vae.model.build_model`` with the frame shape (C, H, W))."""
        from vaebench.vae.sequence import SVGLP

        enc, dec, pred, post, prior = self.networks(tuple(image_shape), latent_dim, likelihood.out_channels)
        return SVGLP(enc, dec, pred, post, prior, likelihood, objective, latent_dim, image_shape,
                     n_past=self.cfg.n_past, last_frame_skip=self.cfg.last_frame_skip)


@ARCHITECTURES.register
class SVGVgg64(SVGDcgan64):
    """SVG-LP with svg-code's VGG-style 64x64 frame networks (its BAIR network); the rest as ``svg_dcgan64``."""

    name = "svg_vgg64"
    description = "SVG-LP sequence VAE (VGG 64x64 frame encoder/decoder with skips, LSTM predictor, posterior, prior)"

    def frame_networks(self, channels, out_channels):
        return (VggFrameEncoder(channels, self.cfg.g_dim, self.cfg.filters),
                VggFrameDecoder(out_channels, self.cfg.g_dim, self.cfg.filters))
