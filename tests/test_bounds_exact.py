"""The importance-weighted estimator against a model whose log p(x) is known in closed form: a linear-Gaussian VAE
(p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I)) with its exact posterior as q(z|x). Every importance weight then
equals p(x), so L_k = log p(x) for every k (Burda et al. 2016, eq. 8): a missing or extra log k, a wrong
log-sum-exp axis or a mixed-up sign shows at once."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaebench.metrics.bounds import iwae_bound, per_image_estimates

D64 = torch.float64


class LinearGaussianVAE:
    """x (B, 1, 1, D) float64; exact posterior q(z|x) = N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1."""

    def __init__(self, D: int = 6, d: int = 3, sigma: float = 0.7, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(D, d, generator=g, dtype=D64)
        self.b = torch.randn(D, generator=g, dtype=D64)
        self.sigma = sigma
        self.S = torch.linalg.inv(torch.eye(d, dtype=D64) + self.W.T @ self.W / sigma**2)
        self.image_shape = (1, 1, D)
        self.likelihood = type("L", (), {"out_channels": 1})()

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b), dtype=D64)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x.flatten(1))

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        m = (x.flatten(1) - self.b) @ self.W @ self.S / self.sigma**2
        return MultivariateNormal(m, covariance_matrix=self.S.expand(len(m), -1, -1))

    def _log_joint(self, x, z):
        decoded = z @ self.W.T + self.b
        log_lik = torch.distributions.Normal(decoded, self.sigma).log_prob(x.flatten(1)).sum(-1)
        return log_lik, torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

    def forward_terms(self, x, k=None, x_uint8=None, generator=None, need_sse=False):
        q = self.posterior(x)
        eps = torch.randn((k or 1, *q.mean.shape), generator=generator, dtype=D64)
        z = q.mean + eps @ torch.linalg.cholesky(self.S).T
        log_lik, log_prior = self._log_joint(x, z)
        if k is None:
            kl = torch.distributions.kl_divergence(q, MultivariateNormal(torch.zeros(q.mean.shape[-1], dtype=D64),
                                                                         torch.eye(q.mean.shape[-1], dtype=D64)))
            return {"log_px": log_lik[0], "kl": kl, "extra_log_px": {}}
        return {"log_w": log_lik + log_prior - q.log_prob(z), "extra_log_w": {}}

    def log_weights(self, x, k, generator=None):
        return self.forward_terms(x, k, generator=generator)["log_w"]


@pytest.fixture
def model_and_data():
    model = LinearGaussianVAE()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(25, 3, generator=g, dtype=D64)
    x = (z @ model.W.T + model.b + model.sigma * torch.randn(25, 6, generator=g, dtype=D64)).reshape(25, 1, 1, 6)
    return model, x


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_l_k_equals_the_closed_form_log_likelihood_for_every_k(model_and_data, k):
    model, x = model_and_data
    est = per_image_estimates(model, x, torch.zeros(len(x), 1, 1, 6, dtype=torch.uint8), k=k, memory_mb=8.0,
                              generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(est["L_k"], model.log_px(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(est["L_k10"], model.log_px(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(iwae_bound(model, x, k, chunk_size=7, generator=torch.Generator().manual_seed(3)),
                               model.log_px(x), rtol=0, atol=1e-9)
    # the ELBO with the exact posterior equals log p(x) in expectation (single-sample, so only on average)
    gap = est["elbo"] - model.log_px(x)
    assert abs(gap.mean().item()) < 4 * gap.std().item() / math.sqrt(len(gap)) + 1e-9
