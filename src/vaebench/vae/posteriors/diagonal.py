"""Diagonal Gaussian posterior (Kingma & Welling 2014, Section 3 and Appendix B)."""
from __future__ import annotations

import torch

from vaebench.registry import POSTERIORS
from vaebench.vae.functional import LOG_2PI, randn
from vaebench.vae.posteriors import Posterior


@POSTERIORS.register
class DiagonalGaussian(Posterior):
    """q(z|x) = N(mu, diag exp(logvar)), mu and logvar (B, d). Raises ValueError for mismatched or non-2D shapes."""

    name = "diagonal"
    description = "diagonal Gaussian N(mu, diag sigma^2)"

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        if mu.shape != logvar.shape or mu.dim() != 2:
            raise ValueError(f"mu and logvar must both be (B, d); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
        self.mu, self.logvar = mu, logvar

    @classmethod
    def head_dim(cls, latent_dim: int) -> int:
        return 2 * latent_dim

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "DiagonalGaussian":
        """From an encoder head (B, 2d) = [mu, logvar]. Raises ValueError on a wrong size."""
        if h.shape[-1] != 2 * latent_dim:
            raise ValueError(f"diagonal posterior head must have 2*latent_dim={2 * latent_dim} units, got {h.shape[-1]}")
        mu, logvar = h.chunk(2, dim=-1)
        return cls(mu, logvar)

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample: (B, d) if k is None, else (k, B, d) (k i.i.d. draws per image)."""
        shape = tuple(self.mu.shape) if k is None else (k, *self.mu.shape)
        eps = randn(shape, self.mu, generator)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) summed over d: z (B, d) -> (B,), or (k, B, d) -> (k, B); nats."""
        return -0.5 * ((z - self.mu).pow(2) * torch.exp(-self.logvar) + self.logvar + LOG_2PI).sum(-1)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)), (B,), nats (Kingma & Welling 2014, Appendix B)."""
        return 0.5 * (torch.exp(self.logvar) + self.mu.pow(2) - 1.0 - self.logvar).sum(-1)

    def kl_to_diagonal(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q || N(mu, diag exp(logvar))), mu and logvar (B, d) -> (B,) nats: per dimension
        log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2 (Kingma & Welling 2014,
        Appendix B, with a non-standard prior). Raises ValueError if the shapes differ from mu_q's."""
        self.check_prior(mu, logvar)
        return 0.5 * (torch.exp(self.logvar - logvar) + (self.mu - mu).pow(2) * torch.exp(-logvar) - 1.0
                      - (self.logvar - logvar)).sum(-1)
