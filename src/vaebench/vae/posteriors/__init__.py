"""Approximate posteriors q(z|x) over z in R^d, with the standard normal prior p(z) = N(0, I_d).

One module per family, each registered in ``vaebench.registry.POSTERIORS``.
A posterior class is built per batch from the encoder's head output ``h`` and offers:

    Cls.head_dim(latent_dim)    encoder head size for d latent dims
    Cls.from_head(h, latent_dim)
    q.mean                      (B, d)
    q.rsample(k=None)           (B, d) if k is None else (k, B, d), reparameterised
    q.log_prob(z)               (B,) or (k, B): full log-density in nats, summed over the d dims
    q.kl()                      (B,): closed-form KL(q(z|x) || N(0, I)) in nats

Units: nats per image. Nothing is averaged over the batch here.
"""
from __future__ import annotations

import torch

from vaebench.registry import Component


class Posterior(Component):
    """What every posterior family shares: ``name``, its (empty by default) typed config, the mean ``mu``."""

    mu: torch.Tensor

    @classmethod
    def head_dim(cls, latent_dim: int) -> int:
        """Encoder head size needed for ``latent_dim`` latent dimensions."""
        raise NotImplementedError

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "Posterior":
        """The posterior of each image from an encoder head output h (B, head_dim)."""
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean mu, (B, d)."""
        return self.mu

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[-1]
