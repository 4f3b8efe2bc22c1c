"""AR(1) Gaussian posterior of the rho-VAE (Ferdowsi, Diephuis, Rezaeifar, Voloshynovskiy 2019,
"rho-VAE: Autoregressive parametrization of the VAE encoder", arXiv 1909.06236)."""
from __future__ import annotations

import torch

from vaebench.registry import POSTERIORS
from vaebench.vae.functional import LOG_2PI, log1m_tanh_sq, randn
from vaebench.vae.posteriors import Posterior


@POSTERIORS.register
class AR1Gaussian(Posterior):
    """q(z|x) = N(mu, C), C_ij = s * rho^|i-j| (AR(1) / Kac-Murdock-Szego Toeplitz covariance).

    Encoder head (B, d + 2) = [mu, a, log_s] with rho = tanh(a) in (-1, 1) and s = exp(log_s).
    KL as in the paper's eq. 6; the sampler uses the exact Cholesky factor of C (the paper's eq. 7 has
    the prefactor 1/sqrt(s) where sqrt(s) is right, and its reference code's sampler ignores rho).

    Args:
        mu:    (B, d)
        a:     (B, 1) pre-tanh correlation
        log_s: (B, 1) log of the marginal variance s
    Exact sampling with C = L L^T:
        z_1 = mu_1 + sqrt(s) eps_1
        z_i = mu_i + rho (z_{i-1} - mu_{i-1}) + sqrt(s (1 - rho^2)) eps_i,   i = 2..d
    implemented as a batched mat-vec with L_ij = sqrt(s) * c_j * rho^{i-j} (j <= i), c_1 = 1,
    c_j = sqrt(1 - rho^2) for j >= 2 (a (B, d, d) masked Toeplitz of powers of rho; no loop).
    Raises ValueError for inconsistent shapes.
    """

    name = "ar1"
    description = "AR(1) Gaussian N(mu, s rho^|i-j|) (rho-VAE)"

    def __init__(self, mu: torch.Tensor, a: torch.Tensor, log_s: torch.Tensor):
        if mu.dim() != 2 or a.shape != (mu.shape[0], 1) or log_s.shape != (mu.shape[0], 1):
            raise ValueError(
                f"expected mu (B, d), a (B, 1), log_s (B, 1); got {tuple(mu.shape)}, {tuple(a.shape)}, {tuple(log_s.shape)}"
            )
        self.mu, self.a, self.log_s = mu, a, log_s
        self.rho = torch.tanh(a)                      # (B, 1)
        self.log1m_rho2 = log1m_tanh_sq(a)            # (B, 1), log(1 - rho^2)

    @classmethod
    def head_dim(cls, latent_dim: int) -> int:
        return latent_dim + 2

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "AR1Gaussian":
        """Split an encoder head output h of shape (B, d + 2) into mu (B, d), a (B, 1), log_s (B, 1)."""
        if h.shape[-1] != latent_dim + 2:
            raise ValueError(f"ar1 posterior head must have latent_dim+2={latent_dim + 2} units, got {h.shape[-1]}")
        d = latent_dim
        return cls(h[:, :d], h[:, d:d + 1], h[:, d + 1:d + 2])

    def cholesky(self) -> torch.Tensor:
        """Lower-triangular factor L of C = s rho^|i-j|, shape (B, d, d)."""
        d = self.latent_dim
        idx = torch.arange(d, device=self.mu.device)
        lag = idx[:, None] - idx[None, :]                                # (d, d), i - j
        mask = (lag >= 0).to(self.mu.dtype)
        powers = torch.pow(self.rho[:, :, None], lag.clamp(min=0).to(self.mu.dtype))  # (B, d, d), rho^{i-j}
        col_scale = torch.ones(self.mu.shape[0], 1, d, device=self.mu.device, dtype=self.mu.dtype)
        col_scale = torch.cat(
            [col_scale[:, :, :1], torch.exp(0.5 * self.log1m_rho2)[:, :, None].expand(-1, 1, d - 1)], dim=-1
        )                                                                 # (B, 1, d): 1, sqrt(1-rho^2), ...
        return torch.exp(0.5 * self.log_s)[:, :, None] * col_scale * powers * mask

    def covariance(self) -> torch.Tensor:
        """Dense covariance C_ij = s rho^|i-j|, shape (B, d, d) (for tests and diagnostics)."""
        d = self.latent_dim
        idx = torch.arange(d, device=self.mu.device)
        lag = (idx[:, None] - idx[None, :]).abs().to(self.mu.dtype)
        return torch.exp(self.log_s)[:, :, None] * torch.pow(self.rho[:, :, None], lag)

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact reparameterised sample z = mu + L eps: (B, d) if k is None, else (k, B, d)."""
        shape = tuple(self.mu.shape) if k is None else (k, *self.mu.shape)
        eps = randn(shape, self.mu, generator)
        L = self.cholesky()                                               # (B, d, d)
        return self.mu + torch.einsum("bij,...bj->...bi", L, eps)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """Whitened residuals e = L^{-1}(z - mu): e_1 = r_1/sqrt(s), e_i = (r_i - rho r_{i-1})/sqrt(s(1-rho^2)).

        z (..., B, d) -> e of the same shape; e ~ N(0, I) when z ~ q.
        """
        r = z - self.mu
        e_first = r[..., :1] * torch.exp(-0.5 * self.log_s)
        innov = r[..., 1:] - self.rho * r[..., :-1]
        e_rest = innov * torch.exp(-0.5 * (self.log_s + self.log1m_rho2))
        return torch.cat([e_first, e_rest], dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) = -1/2 sum e_i^2 - (d/2) log 2 pi - 1/2 [d log s + (d-1) log(1-rho^2)],
        using det C = s^d (1 - rho^2)^(d-1). z (B, d) -> (B,), or (k, B, d) -> (k, B); nats.
        """
        d = self.latent_dim
        e = self.whiten(z)
        log_det = (d * self.log_s + (d - 1) * self.log1m_rho2).squeeze(-1)   # (B,), log det C
        return -0.5 * e.pow(2).sum(-1) - 0.5 * d * LOG_2PI - 0.5 * log_det

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 1/2 [||mu||^2 + d (s - 1 - log s) - (d-1) log(1 - rho^2)] (Ferdowsi et al. 2019,
        eq. 6: tr C = d s, log det C = d log s + (d-1) log(1 - rho^2)), shape (B,), nats. Per image, no
        batch averaging of any term (the reference code averages the covariance part over the batch)."""
        d = self.latent_dim
        s_term = d * (torch.exp(self.log_s) - 1.0 - self.log_s)          # (B, 1)
        rho_term = -(d - 1) * self.log1m_rho2                             # (B, 1), >= 0
        return 0.5 * (self.mu.pow(2).sum(-1) + (s_term + rho_term).squeeze(-1))
