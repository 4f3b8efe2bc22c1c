"""Posterior maths vs independent references (torch.distributions, dense covariances, closed-form test vectors)."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaebench.registry import POSTERIORS, UnknownComponentError
from vaebench.vae.functional import log1m_tanh_sq
from vaebench.vae.posteriors.ar1 import AR1Gaussian
from vaebench.vae.posteriors.diagonal import DiagonalGaussian


def make_posterior(name, h, latent_dim):
    return POSTERIORS.get(name).from_head(h, latent_dim)

D64 = torch.float64


def ar1(mu, rho, s):
    """AR1Gaussian from mu (B, d) and per-image rho, s (B,)."""
    a = torch.atanh(torch.as_tensor(rho, dtype=D64)).reshape(-1, 1)
    log_s = torch.log(torch.as_tensor(s, dtype=D64)).reshape(-1, 1)
    return AR1Gaussian(mu, a, log_s)


def dense_cov(rho, s, d):
    i = torch.arange(d, dtype=D64)
    return s * rho ** (i[:, None] - i[None, :]).abs()


def test_diagonal_kl_and_log_prob_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g, dtype=D64), torch.randn(5, 7, generator=g, dtype=D64)
    q = DiagonalGaussian(mu, logvar)
    ref_q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(q.kl(), kl_divergence(ref_q, p).sum(-1))
    z = q.rsample(3)
    assert z.shape == (3, 5, 7) and q.rsample().shape == (5, 7)
    torch.testing.assert_close(q.log_prob(z), ref_q.log_prob(z).sum(-1))


def test_diagonal_rsample_is_reparameterised():
    mu = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    DiagonalGaussian(mu, logvar).rsample(4).sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2, 3), 4.0))


@pytest.mark.parametrize("d", [1, 2, 7, 64])
def test_ar1_kl_and_log_prob_match_dense_multivariate_normal(d):
    g = torch.Generator().manual_seed(d)
    B = 6
    mu = torch.randn(B, d, generator=g, dtype=D64)
    rho = torch.rand(B, generator=g, dtype=D64) * 1.98 - 0.99
    s = torch.exp(torch.randn(B, generator=g, dtype=D64))
    q = ar1(mu, rho, s)
    z = q.rsample(3, generator=g)
    log_q = q.log_prob(z)                                                  # (3, B)
    for b in range(B):
        C = dense_cov(rho[b], s[b], d)
        ref = MultivariateNormal(mu[b], covariance_matrix=C)
        prior = MultivariateNormal(torch.zeros(d, dtype=D64), covariance_matrix=torch.eye(d, dtype=D64))
        torch.testing.assert_close(q.kl()[b], kl_divergence(ref, prior), atol=1e-5, rtol=1e-7)
        torch.testing.assert_close(log_q[:, b], ref.log_prob(z[:, b]), atol=1e-5, rtol=1e-7)
        torch.testing.assert_close(q.covariance()[b], C)
    L = q.cholesky()
    torch.testing.assert_close(L @ L.transpose(-1, -2), q.covariance())


def test_ar1_sampler_follows_the_recurrence():
    d, B = 6, 3
    mu = torch.randn(B, d, dtype=D64)
    rho, s = torch.tensor([0.6, -0.9, 0.0], dtype=D64), torch.tensor([0.7, 2.0, 0.1], dtype=D64)
    q = ar1(mu, rho, s)
    z = q.rsample(generator=torch.Generator().manual_seed(5))
    eps = torch.randn(B, d, generator=torch.Generator().manual_seed(5), dtype=D64)
    ref = torch.empty(B, d, dtype=D64)
    for b in range(B):
        ref[b, 0] = mu[b, 0] + s[b].sqrt() * eps[b, 0]
        for i in range(1, d):
            ref[b, i] = mu[b, i] + rho[b] * (ref[b, i - 1] - mu[b, i - 1]) + (s[b] * (1 - rho[b] ** 2)).sqrt() * eps[b, i]
    torch.testing.assert_close(z, ref)
    torch.testing.assert_close(q.whiten(z), eps)


def test_ar1_empirical_covariance_matches_toeplitz():
    d, n = 5, 100_000
    rho, s = torch.tensor([0.8, -0.5], dtype=D64), torch.tensor([0.5, 1.5], dtype=D64)
    q = ar1(torch.zeros(2, d, dtype=D64), rho, s)
    z = q.rsample(n, generator=torch.Generator().manual_seed(2))          # (n, 2, d)
    for b in range(2):
        emp = torch.cov(z[:, b].T)
        torch.testing.assert_close(emp, dense_cov(rho[b], s[b], d), atol=0.03, rtol=0.0)


def test_ar1_closed_form_vectors():
    # eq. 6 of Ferdowsi et al. 2019 evaluated by hand: mu = 0, d = 6, s = 0.7, rho = 0.6
    q = ar1(torch.zeros(1, 6, dtype=D64), torch.tensor([0.6]), torch.tensor([0.7]))
    assert q.kl().item() == pytest.approx(1.285743, abs=1e-6)
    assert q.log_prob(q.mean).item() == pytest.approx(-3.327889, abs=1e-6)


def test_ar1_kl_is_zero_at_prior_and_positive_elsewhere():
    q = AR1Gaussian(torch.zeros(2, 4), torch.zeros(2, 1), torch.zeros(2, 1))
    torch.testing.assert_close(q.kl(), torch.zeros(2))
    q = AR1Gaussian(torch.zeros(1, 4), torch.full((1, 1), 0.3), torch.zeros(1, 1))
    assert q.kl().item() > 0


def test_log1m_tanh_sq_is_exact_and_stable():
    a = torch.linspace(-5, 5, 101, dtype=D64)
    torch.testing.assert_close(log1m_tanh_sq(a), torch.log1p(-torch.tanh(a) ** 2))
    big = torch.tensor([40.0, -300.0], dtype=torch.float32, requires_grad=True)
    out = log1m_tanh_sq(big)
    torch.testing.assert_close(out.detach(), 2 * (math.log(2) - big.detach().abs()))
    out.sum().backward()
    assert torch.isfinite(big.grad).all()


def test_ar1_gradients_finite_when_tanh_saturates():
    h = torch.tensor([[0.1, -0.2, 0.3, 30.0, 0.0]], requires_grad=True)     # a = 30 -> rho == 1 in float32
    q = make_posterior("ar1", h, 3)
    loss = q.kl().sum() + q.log_prob(q.rsample(2, generator=torch.Generator().manual_seed(0))).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


def test_head_sizes_are_checked():
    with pytest.raises(ValueError):
        make_posterior("diagonal", torch.zeros(2, 5), 3)
    with pytest.raises(ValueError):
        make_posterior("ar1", torch.zeros(2, 6), 3)
    with pytest.raises(UnknownComponentError, match="posterior.name: unknown value 'full'.*diagonal"):
        make_posterior("full", torch.zeros(2, 6), 3)
    assert POSTERIORS.get("diagonal").head_dim(3) == 6 and POSTERIORS.get("ar1").head_dim(3) == 5
