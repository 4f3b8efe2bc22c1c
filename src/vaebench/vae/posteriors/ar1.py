"""AR(1) Gaussian posterior of the rho-VAE (Ferdowsi, Diephuis, Rezaeifar, Voloshynovskiy 2019, arXiv 1909.06236)."""
from __future__ import annotations

import torch

from vaebench.registry import POSTERIORS
from vaebench.vae.functional import LOG_2PI, log1m_tanh_sq, randn
from vaebench.vae.posteriors import Posterior


@POSTERIORS.register
class AR1Gaussian(Posterior):
    """q(z|x) = N(mu, C), C_ij = s rho^|i-j|; mu (B, d), a (B, 1) with rho = tanh(a), log_s (B, 1). Raises
    ValueError for inconsistent shapes. Samples with the exact Cholesky factor: the paper's eq. 7 has 1/sqrt(s)
    where sqrt(s) is right, and the rho-VAE code's sampler ignores rho (Ferdowsi et al. 2019)."""

    name = "ar1"
    description = "AR(1) Gaussian N(mu, s rho^|i-j|) (rho-VAE)"

    def __init__(self, mu: torch.Tensor, a: torch.Tensor, log_s: torch.Tensor):
        if mu.dim() != 2 or a.shape != (mu.shape[0], 1) or log_s.shape != (mu.shape[0], 1):
            raise ValueError(
                f"expected mu (B, d), a (B, 1), log_s (B, 1); got {tuple(mu.shape)}, {tuple(a.shape)}, {tuple(log_s.shape)}"
            )
        self.mu, self.a, self.log_s = mu, a, log_s
        self.rho = torch.tanh(a)
        self.log1m_rho2 = log1m_tanh_sq(a)

    @classmethod
    def head_dim(cls, latent_dim: int) -> int:
        return latent_dim + 2

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "AR1Gaussian":
        """From an encoder head (B, d + 2) = [mu, a, log_s]."""
        if h.shape[-1] != latent_dim + 2:
            raise ValueError(f"ar1 posterior head must have latent_dim+2={latent_dim + 2} units, got {h.shape[-1]}")
        d = latent_dim
        return cls(h[:, :d], h[:, d:d + 1], h[:, d + 1:d + 2])

    def cholesky(self) -> torch.Tensor:
        """Lower-triangular factor L of C = s rho^|i-j|, shape (B, d, d)."""
        d = self.latent_dim
        idx = torch.arange(d, device=self.mu.device)
        lag = idx[:, None] - idx[None, :]
        mask = (lag >= 0).to(self.mu.dtype)
        powers = torch.pow(self.rho[:, :, None], lag.clamp(min=0).to(self.mu.dtype))
        col_scale = torch.ones(self.mu.shape[0], 1, d, device=self.mu.device, dtype=self.mu.dtype)
        col_scale = torch.cat(
            [col_scale[:, :, :1], torch.exp(0.5 * self.log1m_rho2)[:, :, None].expand(-1, 1, d - 1)], dim=-1
        )
        return torch.exp(0.5 * self.log_s)[:, :, None] * col_scale * powers * mask

    def covariance(self) -> torch.Tensor:
        """Dense covariance C_ij = s rho^|i-j|, shape (B, d, d)."""
        d = self.latent_dim
        idx = torch.arange(d, device=self.mu.device)
        lag = (idx[:, None] - idx[None, :]).abs().to(self.mu.dtype)
        return torch.exp(self.log_s)[:, :, None] * torch.pow(self.rho[:, :, None], lag)

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact reparameterised sample z = mu + L eps: (B, d) if k is None, else (k, B, d)."""
        shape = tuple(self.mu.shape) if k is None else (k, *self.mu.shape)
        eps = randn(shape, self.mu, generator)
        L = self.cholesky()
        return self.mu + torch.einsum("bij,...bj->...bi", L, eps)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """Whitened residuals e = L^{-1}(z - mu), z (..., B, d) -> same shape."""
        r = z - self.mu
        e_first = r[..., :1] * torch.exp(-0.5 * self.log_s)
        innov = r[..., 1:] - self.rho * r[..., :-1]
        e_rest = innov * torch.exp(-0.5 * (self.log_s + self.log1m_rho2))
        return torch.cat([e_first, e_rest], dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x): z (B, d) -> (B,), or (k, B, d) -> (k, B); nats."""
        d = self.latent_dim
        e = self.whiten(z)
        log_det = (d * self.log_s + (d - 1) * self.log1m_rho2).squeeze(-1)
        return -0.5 * e.pow(2).sum(-1) - 0.5 * d * LOG_2PI - 0.5 * log_det

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)), (B,), nats (Ferdowsi et al. 2019, eq. 6); per image, where the rho-VAE code averages
        the covariance part over the batch."""
        d = self.latent_dim
        s_term = d * (torch.exp(self.log_s) - 1.0 - self.log_s)
        rho_term = -(d - 1) * self.log1m_rho2
        return 0.5 * (self.mu.pow(2).sum(-1) + (s_term + rho_term).squeeze(-1))

    def kl_to_diagonal(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q || N(mu_p, D)), D = diag exp(logvar), mu and logvar (B, d) -> (B,) nats, the Gaussian closed form
        1/2 [tr(D^-1 C) + (mu_q - mu_p)^T D^-1 (mu_q - mu_p) - d + log det D - log det C] with diag C = s and
        log det C = d log s + (d - 1) log(1 - rho^2) (the AR(1) covariance of Ferdowsi et al. 2019, eq. 5-6).
        Raises ValueError if the shapes differ from mu_q's."""
        self.check_prior(mu, logvar)
        d = self.latent_dim
        inv_var = torch.exp(-logvar)
        trace = (torch.exp(self.log_s) * inv_var).sum(-1)
        mahalanobis = ((self.mu - mu).pow(2) * inv_var).sum(-1)
        log_det_q = (d * self.log_s + (d - 1) * self.log1m_rho2).squeeze(-1)
        return 0.5 * (trace + mahalanobis - d + logvar.sum(-1) - log_det_q)
