"""Architecture ``conv``: Conv2d encoder and ConvTranspose2d decoder for any image size, layers set in the config;
the decoder's start size is worked backwards from the image size. Default: the sigma-VAE reference network
(Rybkin et al. 2021, github.com/orybkin/sigma-vae-pytorch, model.py). Settings for other reference networks:
docs/implementation-notes.md."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from vaebench.registry import ARCHITECTURES, ComponentConfig, StrictConfig
from vaebench.vae.networks import Architecture

Activation = Literal["relu", "elu", "leaky_relu", "identity"]


def make_activation(name: str) -> nn.Module:
    """The module of an ``Activation`` name (leaky_relu: negative slope 0.2; identity: none)."""
    return {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.2),
            "identity": nn.Identity}[name]()


class ConvLayer(StrictConfig):
    """One encoder layer: Conv2d(channels, kernel, stride, padding) -> activation (-> BatchNorm2d)."""

    channels: PositiveInt = Field(..., description="Output channels.")
    kernel: PositiveInt = Field(..., description="Kernel size k (square).")
    stride: PositiveInt = Field(1, description="Stride s.")
    padding: NonNegativeInt | None = Field(
        None, description="Zero padding p on each side; default (k - 1) // 2 ('same' at stride 1).")
    activation: Activation | None = Field(None, description="This layer's activation; default the architecture's.")

    def resolved_padding(self) -> int:
        return (self.kernel - 1) // 2 if self.padding is None else self.padding


class ConvTransposeLayer(StrictConfig):
    """One decoder layer: ConvTranspose2d(channels, kernel, stride, padding) -> activation (-> BatchNorm2d); the
    last layer emits out_channels*C raw channels, with no activation."""

    channels: PositiveInt | None = Field(
        None, description="Output channels; required for every layer but the last, which emits out_channels*C "
                          "(the likelihood's channels per image channel) and has none.")
    kernel: PositiveInt = Field(..., description="Kernel size k (square).")
    stride: PositiveInt = Field(1, description="Stride s.")
    padding: NonNegativeInt | None = Field(
        None, description="Padding p; default max(0, (k - s + 1) // 2) (doubles the size for k = 4 or 6 at s = 2).")
    activation: Activation | None = Field(
        None, description="This layer's activation; default the architecture's; none on the last layer.")

    def resolved_padding(self) -> int:
        return max(0, (self.kernel - self.stride + 1) // 2) if self.padding is None else self.padding


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Conv2d output size along one axis: floor((size + 2p - k) / s) + 1 (dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


def _layer_text(kind: str, layer, padding: int) -> str:
    return f"{kind}(kernel={layer.kernel}, stride={layer.stride}, padding={padding})"


def encoder_sizes(image_hw: tuple[int, int], layers: list[ConvLayer]) -> list[tuple[int, int]]:
    """The feature-map size (h, w) after each encoder layer. Raises ValueError when a size drops below 1."""
    sizes, (h, w) = [], image_hw
    for i, layer in enumerate(layers):
        p = layer.resolved_padding()
        nh, nw = (conv_output_size(n, layer.kernel, layer.stride, p) for n in (h, w))
        if min(nh, nw) < 1:
            raise ValueError(
                f"architecture 'conv': images of {image_hw[0]}x{image_hw[1]} are too small for encoder[{i}] "
                f"{_layer_text('Conv2d', layer, p)}: its {h}x{w} input would give {nh}x{nw}")
        h, w = nh, nw
        sizes.append((h, w))
    return sizes


def decoder_plan(image_hw: tuple[int, int], layers: list[ConvTransposeLayer]
                 ) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The decoder's start size (h0, w0) and each layer's output_padding (h, w), worked backwards from (H, W).
    Raises ValueError when an input size is below 1 or an output_padding outside [0, s - 1]."""
    target, output_paddings = image_hw, []
    for i in reversed(range(len(layers))):
        layer = layers[i]
        k, s, p = layer.kernel, layer.stride, layer.resolved_padding()
        size_in = tuple(conv_output_size(t, k, s, p) for t in target)
        extra = tuple(t - ((n - 1) * s - 2 * p + k) for t, n in zip(target, size_in))
        if min(size_in) < 1 or not all(0 <= e < s for e in extra):
            raise ValueError(
                f"architecture 'conv': the decoder cannot make images of {image_hw[0]}x{image_hw[1]}: decoder[{i}] "
                f"{_layer_text('ConvTranspose2d', layer, p)} cannot output {target[0]}x{target[1]} "
                f"(it would need a {size_in[0]}x{size_in[1]} input and output_padding {extra[0]}x{extra[1]})")
        output_paddings.insert(0, extra)
        target = size_in
    return target, output_paddings


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> conv stack -> flatten -> hidden Linear layers -> (B, head_dim). Raises ValueError."""

    def __init__(self, image_shape: tuple[int, int, int], layers: list[ConvLayer], fc: list[int],
                 fc_activation: str, head_dim: int, activation: str, batch_norm: bool):
        super().__init__()
        c, h, w = image_shape
        self.sizes = encoder_sizes((h, w), layers)
        convs = []
        for layer in layers:
            convs += [nn.Conv2d(c, layer.channels, layer.kernel, layer.stride, layer.resolved_padding()),
                      make_activation(layer.activation or activation)]
            if batch_norm:
                convs.append(nn.BatchNorm2d(layer.channels))
            c = layer.channels
        self.conv = nn.Sequential(*convs)
        self.flat_features = width = c * math.prod(self.sizes[-1])
        hidden = []
        for n in fc:
            hidden += [nn.Linear(width, n), make_activation(fc_activation)]
            width = n
        self.fc = nn.Sequential(*hidden)
        self.head = nn.Linear(width, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.conv(x).flatten(1)))


class ConvDecoder(nn.Module):
    """(N, d) -> Linear layers -> (N, c0, h0, w0) -> transposed convs -> (N, out_channels, H, W), raw. Raises
    ValueError."""

    def __init__(self, latent_dim: int, image_hw: tuple[int, int], out_channels: int, fc: list[int],
                 fc_activation: str, start_channels: int, start_activation: str, layers: list[ConvTransposeLayer],
                 activation: str, batch_norm: bool):
        super().__init__()
        (h0, w0), output_paddings = decoder_plan(image_hw, layers)
        self.start_shape = (start_channels, h0, w0)
        hidden, width = [], latent_dim
        for n in fc:
            hidden += [nn.Linear(width, n), make_activation(fc_activation)]
            width = n
        hidden += [nn.Linear(width, math.prod(self.start_shape)), make_activation(start_activation)]
        self.fc = nn.Sequential(*hidden)
        convs, c = [], start_channels
        for i, (layer, extra) in enumerate(zip(layers, output_paddings)):
            last = i == len(layers) - 1
            out = out_channels if last else layer.channels
            convs.append(nn.ConvTranspose2d(c, out, layer.kernel, layer.stride, layer.resolved_padding(),
                                            output_padding=extra))
            if not last:
                convs.append(make_activation(layer.activation or activation))
                if batch_norm:
                    convs.append(nn.BatchNorm2d(out))
            c = out
        self.conv = nn.Sequential(*convs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.fc(z).view(z.shape[0], *self.start_shape))


SIGMA_VAE_ENCODER = [{"channels": 32, "kernel": 3}, {"channels": 64, "kernel": 4, "stride": 2},
                     {"channels": 128, "kernel": 5, "stride": 2}]
SIGMA_VAE_DECODER = [{"channels": 64, "kernel": 6, "stride": 2}, {"channels": 32, "kernel": 6, "stride": 2},
                     {"kernel": 5}]


@ARCHITECTURES.register
class Conv(Architecture):
    """Convolutional encoder and decoder for images of any size; the layers are settings (see the module
    docstring). Default: the sigma-VAE reference network (Rybkin et al. 2021), equal to 'conv28' at 28x28."""

    name = "conv"
    description = "convolutional encoder and decoder for any image size (default: the sigma-VAE reference network)"

    class Config(ComponentConfig):
        encoder: list[ConvLayer] = Field(
            SIGMA_VAE_ENCODER, min_length=1, validate_default=True,
            description="The encoder's Conv2d layers, image first: {channels, kernel, stride = 1, padding = "
                        "(kernel - 1) // 2, activation}, each followed by the activation (and BatchNorm2d).")
        encoder_fc: list[PositiveInt] = Field(
            [], description="Widths of the hidden Linear layers between the flattened feature map and the Linear "
                            "head, each followed by encoder_fc_activation.")
        encoder_fc_activation: Activation | None = Field(
            None, description="Activation after each encoder_fc layer; default `activation`.")
        decoder_fc: list[PositiveInt] = Field(
            [], description="Widths of the decoder's hidden Linear layers before the Linear that makes its first "
                            "feature map, each followed by decoder_fc_activation.")
        decoder_fc_activation: Activation | None = Field(
            None, description="Activation after each decoder_fc layer; default `activation`.")
        decoder_start_channels: PositiveInt | None = Field(
            None, description="Channels of the decoder's first feature map; default the last encoder layer's.")
        decoder_start_activation: Activation = Field(
            "identity", description="Activation of the decoder's first feature map (the output of its Linear); "
                                    "the sigma-VAE network has none, the rho-VAE networks one.")
        decoder: list[ConvTransposeLayer] = Field(
            SIGMA_VAE_DECODER, min_length=1, validate_default=True,
            description="The decoder's ConvTranspose2d layers, image last: {channels, kernel, stride = 1, padding "
                        "= (kernel - stride + 1) // 2, activation}; the last has no channels (it emits "
                        "out_channels*C) and no activation. The first feature map's size is worked backwards "
                        "from the image size.")
        activation: Activation = Field(
            "relu", description="Activation of every conv layer that does not name its own, and of the hidden "
                                "Linear layers unless encoder_fc_activation / decoder_fc_activation is set.")
        batch_norm: bool = Field(
            False, description="BatchNorm2d after the activation of every conv layer but the decoder's last "
                               "(eval mode uses its running averages).")

        @field_validator("decoder")
        @classmethod
        def _last_layer_is_the_output(cls, layers: list[ConvTransposeLayer]) -> list[ConvTransposeLayer]:
            for i, layer in enumerate(layers[:-1]):
                if layer.channels is None:
                    raise ValueError(f"decoder[{i}].channels is required (only the last layer has none)")
            if layers and layers[-1].channels is not None:
                raise ValueError(f"decoder[{len(layers) - 1}].channels must be left out: the last layer emits "
                                 "out_channels*C channels, set by the likelihood and the images")
            if layers and layers[-1].activation is not None:
                raise ValueError(f"decoder[{len(layers) - 1}].activation must be left out: the last layer's "
                                 "outputs are raw, the likelihood applies the output nonlinearity")
            return layers

    def __init__(self, **settings):
        cfg = self.Config(name=self.name, **settings)
        self.encoder, self.decoder = list(cfg.encoder), list(cfg.decoder)
        self.encoder_fc, self.decoder_fc = list(cfg.encoder_fc), list(cfg.decoder_fc)
        self.encoder_fc_activation = cfg.encoder_fc_activation or cfg.activation
        self.decoder_fc_activation = cfg.decoder_fc_activation or cfg.activation
        self.decoder_start_channels = cfg.decoder_start_channels or self.encoder[-1].channels
        self.decoder_start_activation = cfg.decoder_start_activation
        self.activation, self.batch_norm = cfg.activation, cfg.batch_norm

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        """(ConvEncoder, ConvDecoder) for images (C, H, W). Raises ValueError when the layers cannot take that size."""
        c, h, w = image_shape
        encoder = ConvEncoder(image_shape, self.encoder, self.encoder_fc, self.encoder_fc_activation, head_dim,
                              self.activation, self.batch_norm)
        decoder = ConvDecoder(latent_dim, (h, w), out_channels * c, self.decoder_fc, self.decoder_fc_activation,
                              self.decoder_start_channels, self.decoder_start_activation, self.decoder,
                              self.activation, self.batch_norm)
        return encoder, decoder
