"""Posteriors q(z|x), z in R^d, prior N(0, I_d), registered in ``POSTERIORS``; built per batch by ``from_head``.
``rsample(k)`` (B, d) or (k, B, d); ``log_prob(z)``, ``kl()`` and ``kl_to_diagonal(mu, logvar)`` per image, nats."""
from __future__ import annotations

import torch

from vaebench.registry import Component


class Posterior(Component):
    """Base class of the posterior families."""

    mu: torch.Tensor

    @classmethod
    def head_dim(cls, latent_dim: int) -> int:
        """Encoder head size needed for ``latent_dim`` latent dimensions."""
        raise NotImplementedError

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "Posterior":
        """The posterior of each image from an encoder head output h (B, head_dim)."""
        raise NotImplementedError

    def kl_to_diagonal(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q || N(mu, diag exp(logvar))) per image, mu and logvar (B, d) (a hierarchical model's conditional
        prior): (B,) nats."""
        raise NotImplementedError

    def check_prior(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """Raise ValueError unless the prior's mu and logvar of ``kl_to_diagonal`` both have mu_q's shape."""
        if mu.shape != self.mu.shape or logvar.shape != self.mu.shape:
            raise ValueError(f"kl_to_diagonal: prior mu and logvar must be {tuple(self.mu.shape)}, got "
                             f"{tuple(mu.shape)} and {tuple(logvar.shape)}")

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean mu, (B, d)."""
        return self.mu

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[-1]
