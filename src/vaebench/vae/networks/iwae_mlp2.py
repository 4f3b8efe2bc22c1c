"""Architecture ``iwae_mlp2``: the fully connected VAE with stochastic layers of Burda, Grosse, Salakhutdinov 2016
(github.com/yburda/iwae, experiments.py ``--layers 2``), built as a ``vaebench.vae.hierarchical.HierarchicalVAE``.
Defaults are the paper's two layers: q(h_1|x) 784-200-200-100, q(h_2|h_1) 100-100-100-50, p(h_1|h_2) 50-100-100-100,
p(x|h_1) 100-200-200-784, tanh hidden units."""
from __future__ import annotations

import math
from typing import Callable

import torch.nn as nn
from pydantic import Field, PositiveInt

from vaebench.registry import ARCHITECTURES, OBJECTIVES, ComponentConfig
from vaebench.vae.networks import Architecture


def glorot_(linear: nn.Linear, fan_out: int | None = None) -> nn.Linear:
    """Glorot-uniform weights, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), and zero biases (Glorot & Bengio 2010,
    eq. 16; yburda/iwae nnet.py). ``fan_out`` defaults to the layer's output size; a head that emits several
    parameter blocks of size d is initialised with fan_out = d, as the reference's separate mu and sigma layers."""
    fan_in, out = linear.weight.shape[1], linear.weight.shape[0]
    a = math.sqrt(6.0 / (fan_in + (out if fan_out is None else int(fan_out))))
    nn.init.uniform_(linear.weight, -a, a)
    nn.init.zeros_(linear.bias)
    return linear


def tanh_mlp(in_features: int, hidden: list[int], out_features: int, block: int) -> nn.Sequential:
    """(N, in_features) -> [Linear, tanh] per ``hidden`` width -> Linear(out_features) (initialised with
    fan_out = ``block``), every layer ``glorot_``."""
    layers, width = [], in_features
    for h in hidden:
        layers += [glorot_(nn.Linear(width, h)), nn.Tanh()]
        width = h
    layers.append(glorot_(nn.Linear(width, out_features), fan_out=block))
    return nn.Sequential(*layers)


class TanhEncoder(nn.Module):
    """q(h_1 | x) network: (B, C, H, W) in [0, 1] -> flatten -> ``tanh_mlp`` -> (B, head_dim)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: list[int], head_dim: int, block: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *tanh_mlp(math.prod(image_shape), hidden, head_dim, block))

    def forward(self, x):
        return self.net(x)


class TanhDecoder(nn.Module):
    """p(x | h_1) network: (N, d_1) -> ``tanh_mlp`` -> (N, out_channels*C, H, W) raw outputs."""

    def __init__(self, latent_dim: int, hidden: list[int], image_shape: tuple[int, int, int], out_channels: int):
        super().__init__()
        c, h, w = image_shape
        self.out_shape = (out_channels * c, h, w)
        self.net = tanh_mlp(latent_dim, hidden, math.prod(self.out_shape), math.prod(self.out_shape))

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.out_shape)


def _size_problems(latent_dims: list[int], hidden_dims: list[list[int]], latent_dim: int) -> list[tuple[str, str]]:
    problems = []
    if len(latent_dims) < 2:
        problems.append(("architecture.latent_dims", f"needs >= 2 stochastic layers, got {list(latent_dims)}"))
    if len(hidden_dims) != len(latent_dims):
        problems.append(("architecture.hidden_dims",
                         f"needs one list of hidden widths per stochastic layer ({len(latent_dims)} for latent_dims "
                         f"{list(latent_dims)}), got {len(hidden_dims)}: {[list(h) for h in hidden_dims]}"))
    if latent_dim != sum(latent_dims):
        problems.append(("latent_dim", f"must equal the size of the whole latent path, sum(architecture.latent_dims) "
                                       f"= {sum(latent_dims)} (latent_dims {list(latent_dims)}), got {latent_dim}"))
    return problems


@ARCHITECTURES.register
class IWAEMLP2(Architecture):
    """Stochastic layers h_1..h_L of sizes ``latent_dims`` (bottom first), built as a ``HierarchicalVAE``
    (``build_vae``): q(h_1 | x) and q(h_l | h_{l-1}) tanh MLPs with widths ``hidden_dims[l-1]``, each ending in
    the posterior family's head; p(h_l | h_{l+1}) tanh MLPs with widths ``hidden_dims[l]`` reversed, ending in a
    diagonal Gaussian head [mu, log sigma^2]; p(x | h_1) a tanh MLP with widths ``hidden_dims[0]`` reversed. Any
    image size. Init: Glorot uniform, zero biases (yburda/iwae nnet.py); the reference's output bias at the logit
    of the training mean is not used (the ``mlp`` architecture does not use it either). The model's ``latent_dim``
    must be sum(``latent_dims``), the size of the concatenated latent path. Objectives that read the latent
    sample 'z' against N(0, I) (``needs_z``) are rejected: the prior of the concatenated path is not N(0, I)."""

    name = "iwae_mlp2"
    description = "IWAE paper's MLP with stochastic layers (tanh; default two: 100 and 50 units)"

    class Config(ComponentConfig):
        latent_dims: list[PositiveInt] = Field(
            [100, 50], min_length=2,
            description="Sizes of the stochastic layers h_1..h_L, bottom (next to x) first; latent_dim must be "
                        "their sum.")
        hidden_dims: list[list[PositiveInt]] = Field(
            [[200, 200], [100, 100]], min_length=2,
            description="Hidden tanh widths of q(h_1|x), q(h_2|h_1), ... (one list per stochastic layer); "
                        "p(x|h_1), p(h_1|h_2), ... use the same lists reversed.")

    def __init__(self, latent_dims=(100, 50), hidden_dims=((200, 200), (100, 100))):
        self.latent_dims = [int(d) for d in latent_dims]
        self.hidden_dims = [[int(w) for w in h] for h in hidden_dims]
        problems = _size_problems(self.latent_dims, self.hidden_dims, sum(self.latent_dims))
        if problems:
            raise ValueError(f"{problems[0][0]}: {problems[0][1]}")

    @classmethod
    def check_model(cls, model):
        arch = model.architecture
        problems = _size_problems(list(arch.latent_dims), [list(h) for h in arch.hidden_dims], model.latent_dim)
        if OBJECTIVES.get(model.objective.name).needs_z:
            problems.append(("objective.name", f"{model.objective.name!r} compares the latent sample with N(0, I), "
                                               f"but the prior of the {cls.name} latent path is hierarchical"))
        return problems

    def networks(self, image_shape: tuple[int, int, int], head_dim: Callable[[int], int],
                 out_channels: int) -> tuple[nn.Module, nn.ModuleList, nn.ModuleList, nn.Module]:
        """(encoder, up, down, decoder) of ``HierarchicalVAE``, the posterior head of layer l having head_dim(d_l)
        units. Raises ValueError if ``image_shape`` is not (C, H, W) with positive sizes."""
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"architecture 'iwae_mlp2': image_shape must be (C, H, W) > 0, got {image_shape!r}")
        d, hid = self.latent_dims, self.hidden_dims
        encoder = TanhEncoder(image_shape, hid[0], head_dim(d[0]), d[0])
        up = nn.ModuleList(tanh_mlp(d[l - 1], hid[l], head_dim(d[l]), d[l]) for l in range(1, len(d)))
        down = nn.ModuleList(tanh_mlp(d[l + 1], list(reversed(hid[l + 1])), 2 * d[l], d[l]) for l in range(len(d) - 1))
        decoder = TanhDecoder(d[0], list(reversed(hid[0])), image_shape, out_channels)
        return encoder, up, down, decoder

    def build(self, image_shape, latent_dim, head_dim, out_channels):
        """Every network, as (inference ModuleList [encoder, *up], generative ModuleList [*down, decoder]), with every
        posterior head ``head_dim`` wide: for the size checks of ``vaebench.validation``; the model is built by
        ``build_vae``. Raises ValueError when latent_dim is not sum(latent_dims) or for a bad image shape."""
        if latent_dim != sum(self.latent_dims):
            raise ValueError("latent_dim: " + _size_problems(self.latent_dims, self.hidden_dims, latent_dim)[-1][1])
        encoder, up, down, decoder = self.networks(tuple(image_shape), lambda d: head_dim, out_channels)
        return nn.ModuleList([encoder, *up]), nn.ModuleList([*down, decoder])

    def build_vae(self, image_shape, latent_dim, posterior, likelihood, objective):
        """The ``HierarchicalVAE`` (called by ``vaebench.vae.model.build_model``). Raises ValueError as ``build``."""
        from vaebench.vae.hierarchical import HierarchicalVAE

        if latent_dim != sum(self.latent_dims):
            raise ValueError("latent_dim: " + _size_problems(self.latent_dims, self.hidden_dims, latent_dim)[-1][1])
        encoder, up, down, decoder = self.networks(tuple(image_shape), posterior.head_dim, likelihood.out_channels)
        return HierarchicalVAE(encoder, up, down, decoder, posterior, likelihood, objective, self.latent_dims,
                               image_shape)
