"""Approximate posteriors q(z|x) over a latent z in R^d, with a standard normal prior p(z) = N(0, I_d).

Two families, both built from the encoder's head output ``h``:

* ``DiagonalGaussian``  q = N(mu, diag exp(logvar)), head size 2*d        (methods.md section 1)
* ``AR1Gaussian``       q = N(mu, C), C_ij = s * rho^|i-j| (rho-VAE),  head size d + 2  (methods.md 3.1;
  Ferdowsi et al. 2019, arXiv 1909.06236, eq. 6 with the corrected Cholesky factor)

Every posterior offers the same small interface:

    q.mean                      (B, d)
    q.rsample(k=None)           (B, d) if k is None else (k, B, d), reparameterised
    q.log_prob(z)               (B,) or (k, B): full log-density in nats, summed over the d dims
    q.kl()                      (B,): closed-form KL(q(z|x) || N(0, I)) in nats

Units: nats per image. Nothing is averaged over the batch here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I_d) summed over the last dim: (..., d) -> (...), nats."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def _randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device/dtype; drawn on the generator's device if given."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def log1m_tanh_sq(a: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(a)^2), computed without cancellation (methods.md 3.1 "Stability").

    1 - tanh(a)^2 = sech(a)^2 = 4 e^{-2|a|} / (1 + e^{-2|a|})^2, so
    log(1 - tanh(a)^2) = 2 [log 2 - |a| - softplus(-2|a|)].
    Exact for every real a (finite, about -2|a| for large |a|, where the naive form gives -inf).
    Shape preserved.
    """
    a = a.abs()
    return 2.0 * (LOG_2 - a - F.softplus(-2.0 * a))


class _Posterior:
    """What both posterior families share: the mean ``mu`` (B, d) and d."""

    mu: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """Posterior mean mu, (B, d)."""
        return self.mu

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[-1]


class DiagonalGaussian(_Posterior):
    """q(z|x) = N(mu, diag sigma^2), sigma^2 = exp(logvar) (methods.md section 1).

    Args:
        mu:     (B, d)
        logvar: (B, d), log sigma^2
    Sampling z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (reparameterisation trick, Kingma & Welling 2014).
    """

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        if mu.shape != logvar.shape or mu.dim() != 2:
            raise ValueError(f"mu and logvar must both be (B, d); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
        self.mu, self.logvar = mu, logvar

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "DiagonalGaussian":
        """Split an encoder head output h of shape (B, 2*d) into (mu, logvar)."""
        if h.shape[-1] != 2 * latent_dim:
            raise ValueError(f"diagonal posterior head must have 2*latent_dim={2 * latent_dim} units, got {h.shape[-1]}")
        mu, logvar = h.chunk(2, dim=-1)
        return cls(mu, logvar)

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample: (B, d) if k is None, else (k, B, d) (k i.i.d. draws per image)."""
        shape = tuple(self.mu.shape) if k is None else (k, *self.mu.shape)
        eps = _randn(shape, self.mu, generator)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) summed over d: z (B, d) -> (B,), or (k, B, d) -> (k, B); nats."""
        return -0.5 * ((z - self.mu).pow(2) * torch.exp(-self.logvar) + self.logvar + LOG_2PI).sum(-1)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 1/2 sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2), shape (B,), nats."""
        return 0.5 * (torch.exp(self.logvar) + self.mu.pow(2) - 1.0 - self.logvar).sum(-1)


class AR1Gaussian(_Posterior):
    """rho-VAE posterior q(z|x) = N(mu, C), C_ij = s * rho^|i-j| (AR(1) / Kac-Murdock-Szego Toeplitz).

    Ferdowsi et al. 2019 (arXiv 1909.06236), with the corrected maths of methods.md 3.1 (NOT the reference
    code's random-walk sampler, innovation variance s, or batch-averaged covariance KL).

    Args:
        mu:    (B, d)
        a:     (B, 1) pre-tanh correlation, rho = tanh(a) in (-1, 1)
        log_s: (B, 1) log of the marginal variance s
    Exact sampling with the AR(1) Cholesky factor L (C = L L^T):
        z_1 = mu_1 + sqrt(s) eps_1
        z_i = mu_i + rho (z_{i-1} - mu_{i-1}) + sqrt(s (1 - rho^2)) eps_i,   i = 2..d
    implemented as a batched mat-vec with L_ij = sqrt(s) * c_j * rho^{i-j} (j <= i), c_1 = 1,
    c_j = sqrt(1 - rho^2) for j >= 2 (a (B, d, d) masked Toeplitz of powers of rho; no loop).
    """

    def __init__(self, mu: torch.Tensor, a: torch.Tensor, log_s: torch.Tensor):
        if mu.dim() != 2 or a.shape != (mu.shape[0], 1) or log_s.shape != (mu.shape[0], 1):
            raise ValueError(
                f"expected mu (B, d), a (B, 1), log_s (B, 1); got {tuple(mu.shape)}, {tuple(a.shape)}, {tuple(log_s.shape)}"
            )
        self.mu, self.a, self.log_s = mu, a, log_s
        self.rho = torch.tanh(a)                      # (B, 1)
        self.log1m_rho2 = log1m_tanh_sq(a)            # (B, 1), log(1 - rho^2)

    @classmethod
    def from_head(cls, h: torch.Tensor, latent_dim: int) -> "AR1Gaussian":
        """Split an encoder head output h of shape (B, d + 2) into mu (B, d), a (B, 1), log_s (B, 1)."""
        if h.shape[-1] != latent_dim + 2:
            raise ValueError(f"ar1 posterior head must have latent_dim+2={latent_dim + 2} units, got {h.shape[-1]}")
        d = latent_dim
        return cls(h[:, :d], h[:, d:d + 1], h[:, d + 1:d + 2])

    def cholesky(self) -> torch.Tensor:
        """Lower-triangular factor L of C = s rho^|i-j|, shape (B, d, d) (methods.md 3.1)."""
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
        eps = _randn(shape, self.mu, generator)
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
        """log q(z|x) = -1/2 sum e_i^2 - (d/2) log 2 pi - 1/2 [d log s + (d-1) log(1-rho^2)] (methods.md 3.1).

        z (B, d) -> (B,), or (k, B, d) -> (k, B); nats.
        """
        d = self.latent_dim
        e = self.whiten(z)
        log_det = (d * self.log_s + (d - 1) * self.log1m_rho2).squeeze(-1)   # (B,), log det C
        return -0.5 * e.pow(2).sum(-1) - 0.5 * d * LOG_2PI - 0.5 * log_det

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) = 1/2 [||mu||^2 + d (s - 1 - log s) - (d-1) log(1 - rho^2)], shape (B,), nats.

        Paper eq. 6 (methods.md 3.1): tr C = d s, log det C = d log s + (d-1) log(1 - rho^2). Per image,
        no batch averaging of any term.
        """
        d = self.latent_dim
        s_term = d * (torch.exp(self.log_s) - 1.0 - self.log_s)          # (B, 1)
        rho_term = -(d - 1) * self.log1m_rho2                             # (B, 1), >= 0
        return 0.5 * (self.mu.pow(2).sum(-1) + (s_term + rho_term).squeeze(-1))


POSTERIORS = {"diagonal": DiagonalGaussian, "ar1": AR1Gaussian}


def posterior_head_dim(kind: str, latent_dim: int) -> int:
    """Encoder head size for a posterior family: diagonal 2*d, ar1 d + 2. Raises ValueError for unknown kinds."""
    if kind == "diagonal":
        return 2 * latent_dim
    if kind == "ar1":
        return latent_dim + 2
    raise ValueError(f"posterior: unknown value {kind!r} (expected 'diagonal' or 'ar1')")


def make_posterior(kind: str, h: torch.Tensor, latent_dim: int):
    """Build the posterior of family ``kind`` from an encoder head output h (B, posterior_head_dim)."""
    if kind not in POSTERIORS:
        raise ValueError(f"posterior: unknown value {kind!r} (expected 'diagonal' or 'ar1')")
    return POSTERIORS[kind].from_head(h, latent_dim)
