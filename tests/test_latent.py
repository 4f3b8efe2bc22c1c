"""Latent-space analysis (rate, marginal KL, MI, active units) vs known answers: posterior = prior, the
linear-Gaussian aggregate posterior's closed form, dense mixtures from torch.distributions (diagonal and AR(1)),
MI saturating at log N, active units by construction, determinism."""
import math

import pytest
import torch
import torch.nn as nn
from torch.distributions import (Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal,
                                 kl_divergence)

from vaebench.metrics.latent import aggregate_log_prob, latent_analysis
from vaebench.vae import build_model
from vaebench.vae.posteriors.ar1 import AR1Gaussian
from vaebench.vae.posteriors.diagonal import DiagonalGaussian

D64 = torch.float64


class HeadModel(nn.Module):
    """A fake VAE whose 'images' are the encoder head itself: encode(h) = Posterior.from_head(h, d)."""

    def __init__(self, posterior: type, latent_dim: int):
        super().__init__()
        self.posterior, self.latent_dim = posterior, latent_dim

    def encode(self, h):
        return self.posterior.from_head(h, self.latent_dim)


def diag_heads(mu, logvar):
    return torch.cat([mu, logvar], dim=1)


def ar1_heads(mu, rho, s):
    """AR(1) heads [mu, a, log_s] from mu (N, d) and per-image rho, s (N,)."""
    return torch.cat([mu, torch.atanh(rho)[:, None], torch.log(s)[:, None]], dim=1)


def mixture(components):
    """The aggregate posterior (1/N) sum_n q_n as a torch.distributions mixture over N components."""
    n = components.batch_shape[0]
    return MixtureSameFamily(Categorical(logits=torch.zeros(n, dtype=D64)), components)


# --- 1. posterior = prior ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["diagonal", "ar1"])
def test_posterior_equal_to_prior_gives_zero_everything(family):
    N, d = 50, 6
    if family == "diagonal":
        model, h = HeadModel(DiagonalGaussian, d), torch.zeros(N, 2 * d, dtype=D64)     # mu = 0, logvar = 0
    else:
        model, h = HeadModel(AR1Gaussian, d), torch.zeros(N, d + 2, dtype=D64)           # rho = tanh(0) = 0, s = 1
    scalars, arrays = latent_analysis(model, h, batch_size=16, n_samples=2, chunk=7)
    assert scalars["rate_nats"] == 0.0
    assert abs(scalars["marginal_kl_nats"]) < 1e-12       # q(z|x_m) = p for every m, so q(z) = p(z) exactly
    assert abs(scalars["mutual_info_nats"]) < 1e-12
    assert scalars["active_units"] == 0 and scalars["unit_variances"] == [0.0] * d
    assert scalars["n_images"] == N and scalars["latent_dim"] == d and scalars["log_n_nats"] == math.log(N)
    assert arrays["rate_per_image"].shape == (N,) and arrays["rate_per_image"].dtype == D64
    assert arrays["log_q_z"].shape == arrays["log_p_z"].shape == (2, N) and arrays["z"].shape == (2, N, d)
    torch.testing.assert_close(arrays["log_q_z"], arrays["log_p_z"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["diagonal", "ar1"])
def test_posterior_independent_of_x_has_zero_mutual_information(family):
    """q(z|x_n) = q for all n (not the prior): q(z) = q, so marginal KL = rate = KL(q || p) and MI = 0 up to
    the Monte Carlo error of mean(log q(z) - log p(z)), z ~ q."""
    N, d, S = 400, 4, 5
    mu = torch.tensor([0.5, -1.0, 0.3, 0.8], dtype=D64).expand(N, d)
    if family == "diagonal":
        model = HeadModel(DiagonalGaussian, d)
        h = diag_heads(mu, torch.tensor([-1.0, 0.5, 0.0, -0.3], dtype=D64).expand(N, d))
    else:
        model = HeadModel(AR1Gaussian, d)
        h = ar1_heads(mu, torch.full((N,), 0.7, dtype=D64), torch.full((N,), 0.5, dtype=D64))
    scalars, arrays = latent_analysis(model, h, n_samples=S)
    diff = (arrays["log_q_z"] - arrays["log_p_z"]).flatten()
    se = diff.std().item() / math.sqrt(diff.numel())
    assert scalars["rate_nats"] > 1.0
    assert scalars["marginal_kl_nats"] == pytest.approx(scalars["rate_nats"], abs=5 * se)
    assert abs(scalars["mutual_info_nats"]) < 1e-9          # log q(z|x) = log q(z) at every sample
    assert scalars["active_units"] == 0


# --- 2. linear-Gaussian closed form and the dense mixture density -----------------------------------------

@pytest.mark.parametrize("s,t", [(0.6, 0.8), (0.5, 0.5)])
def test_linear_gaussian_aggregate_posterior_closed_form(s, t):
    """q(z|x_n) = N(mu_n, s^2 I), mu_n ~ N(0, t^2 I): for large N, q(z) -> N(0, v I) with v = s^2 + t^2, so
    marginal KL -> d/2 (v - 1 - log v) (0 when v = 1) and MI -> I(mu + s eps; mu) = d/2 log(1 + t^2/s^2)."""
    N, d = 2000, 2
    g = torch.Generator().manual_seed(7)
    mu = t * torch.randn(N, d, generator=g, dtype=D64)
    logvar = torch.full((N, d), 2 * math.log(s), dtype=D64)
    scalars, arrays = latent_analysis(HeadModel(DiagonalGaussian, d), diag_heads(mu, logvar), seed=3)

    rate_ref = 0.5 * (s * s + mu.pow(2) - 1 - 2 * math.log(s)).sum(-1)        # Kingma & Welling 2014, App. B
    torch.testing.assert_close(arrays["rate_per_image"], rate_ref, rtol=1e-12, atol=1e-12)
    assert scalars["rate_nats"] == pytest.approx(rate_ref.mean().item(), abs=1e-12)

    v = s * s + t * t
    marginal_kl_ref = d / 2 * (v - 1 - math.log(v))
    diff = (arrays["log_q_z"] - arrays["log_p_z"]).flatten()
    se = diff.std().item() / math.sqrt(diff.numel())                    # Monte Carlo standard error
    # 4 standard errors plus 0.01 nats for the finite-N mixture (a kernel density estimate of N(0, v I),
    # whose KL to the Gaussian limit is O(1/N); measured ~0.002 at N = 2000).
    assert scalars["marginal_kl_nats"] == pytest.approx(marginal_kl_ref, abs=4 * se + 0.01)
    # MI also carries the sampling error of mu_n in the rate: sd(rate) = t^2 sqrt(d/2) / sqrt(N) ~ 0.014 here.
    mi_ref = d / 2 * math.log(1 + t * t / (s * s))
    assert scalars["mutual_info_nats"] == pytest.approx(mi_ref, abs=4 * t * t * math.sqrt(d / 2 / N) + 4 * se + 0.01)
    ref = (arrays["log_q_z_given_x"] - arrays["log_q_z"]).mean().item()
    assert scalars["mutual_info_nats"] == pytest.approx(ref, abs=1e-12) and not scalars["mutual_info_saturated"]
    assert scalars["active_units"] == 2
    assert scalars["unit_variances"] == pytest.approx([t * t] * d, rel=0.1)


def test_aggregate_log_prob_matches_torch_mixture_diagonal():
    N, d, M = 37, 3, 23
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(N, d, generator=g, dtype=D64), torch.randn(N, d, generator=g, dtype=D64)
    posteriors = [DiagonalGaussian(mu[i: i + 10], logvar[i: i + 10]) for i in range(0, N, 10)]   # 10, 10, 10, 7
    z = 1.5 * torch.randn(M, d, generator=g, dtype=D64)
    ref = mixture(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)).log_prob(z)
    for chunk in (1, 5, 100):
        torch.testing.assert_close(aggregate_log_prob(posteriors, z, chunk), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(D64, 1e-12), (torch.float32, 2e-5)])
def test_latent_analysis_log_q_matches_torch_mixture_at_its_samples(dtype, tol):
    N, d, S = 41, 3, 3
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(N, d, generator=g, dtype=D64), torch.randn(N, d, generator=g, dtype=D64)
    scalars, arrays = latent_analysis(HeadModel(DiagonalGaussian, d), diag_heads(mu, logvar).to(dtype),
                                      batch_size=10, n_samples=S, chunk=7)
    z = arrays["z"]                                                            # (S, N, d)
    q = mixture(Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))
    p = Independent(Normal(torch.zeros(d, dtype=D64), torch.ones(d, dtype=D64)), 1)
    torch.testing.assert_close(arrays["log_q_z"], q.log_prob(z), rtol=tol, atol=tol)
    torch.testing.assert_close(arrays["log_p_z"], p.log_prob(z), rtol=tol, atol=tol)
    ref_mkl = (q.log_prob(z) - p.log_prob(z)).mean().item()
    assert scalars["marginal_kl_nats"] == pytest.approx(ref_mkl, abs=10 * tol)
    # the samples come from their own image's posterior: standardised residuals are N(0, 1)
    eps = (z - mu) / torch.exp(0.5 * logvar)
    assert abs(eps.mean().item()) < 0.3 and eps.std().item() == pytest.approx(1.0, abs=0.2)


# --- 3. AR(1) posterior ----------------------------------------------------------------------------------

def test_ar1_log_q_and_rate_match_dense_multivariate_normal():
    N, d, S = 29, 5, 2
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(N, d, generator=g, dtype=D64)
    rho = torch.rand(N, generator=g, dtype=D64) * 1.8 - 0.9
    s = torch.exp(0.5 * torch.randn(N, generator=g, dtype=D64))
    model = HeadModel(AR1Gaussian, d)
    h = ar1_heads(mu, rho, s)
    scalars, arrays = latent_analysis(model, h, batch_size=8, n_samples=S, chunk=6)

    i = torch.arange(d, dtype=D64)
    cov = s[:, None, None] * rho[:, None, None] ** (i[:, None] - i[None, :]).abs()          # (N, d, d)
    torch.testing.assert_close(model.encode(h).covariance(), cov)
    comps = MultivariateNormal(mu, covariance_matrix=cov)
    prior = MultivariateNormal(torch.zeros(d, dtype=D64), torch.eye(d, dtype=D64))
    torch.testing.assert_close(arrays["rate_per_image"], kl_divergence(comps, prior), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(arrays["rate_per_image"], model.encode(h).kl(), rtol=1e-12, atol=1e-12)
    z = arrays["z"]
    q = mixture(comps)
    torch.testing.assert_close(arrays["log_q_z"], q.log_prob(z), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(arrays["log_p_z"], prior.log_prob(z), rtol=1e-12, atol=1e-12)
    assert scalars["marginal_kl_nats"] == pytest.approx((q.log_prob(z) - prior.log_prob(z)).mean().item(), abs=1e-10)
    # the posterior is applied across images: z of image i under image m's AR(1) density, for every pair
    posteriors = [model.encode(h[k: k + 4]) for k in range(0, N, 4)]
    torch.testing.assert_close(aggregate_log_prob(posteriors, z[0], chunk=3), q.log_prob(z[0]),
                               rtol=1e-10, atol=1e-10)


# --- MI saturates at log N --------------------------------------------------------------------------------

def test_mutual_information_saturates_at_log_n():
    """Narrow, well-separated posteriors: log q(z_i) = log q(z_i | x_i) - log N, so MI -> log N (the bound)."""
    N, d = 1000, 2
    g = torch.Generator().manual_seed(4)
    mu = 3.0 * torch.randn(N, d, generator=g, dtype=D64)
    logvar = torch.full((N, d), 2 * math.log(1e-4), dtype=D64)
    scalars, _ = latent_analysis(HeadModel(DiagonalGaussian, d), diag_heads(mu, logvar))
    assert scalars["mutual_info_nats"] == pytest.approx(math.log(N), abs=1e-6)
    assert scalars["mutual_info_saturated"] and scalars["rate_nats"] > 15.0


@pytest.mark.parametrize("seed", range(8))
def test_mutual_information_never_exceeds_log_n(seed):
    """On the same samples every term log q(z|x_m) - log q(z) is at most log N; rate minus a Monte Carlo marginal KL
    on other samples is not (it exceeds log N about half the time here)."""
    N, d = 200, 3
    g = torch.Generator().manual_seed(100 + seed)
    mu = 4.0 * torch.randn(N, d, generator=g, dtype=D64)
    logvar = torch.full((N, d), 2 * math.log(0.05), dtype=D64)
    scalars, arrays = latent_analysis(HeadModel(DiagonalGaussian, d), diag_heads(mu, logvar), seed=seed)
    assert scalars["mutual_info_nats"] <= math.log(N)
    assert ((arrays["log_q_z_given_x"] - arrays["log_q_z"]) <= math.log(N) + 1e-9).all()


# --- 4. active units --------------------------------------------------------------------------------------

class ThreeActiveUnits(nn.Module):
    """mu = [x_1, x_2, x_3, 0.05 x_1, 0.05 x_2, 0, 0, 0] for x (N, 3): 3 units with Var ~ 1 > 0.01, two
    with Var ~ 0.0025 < 0.01 (dependent on x but below the threshold), three constant."""

    latent_dim = 8

    def encode(self, x):
        mu = torch.cat([x, 0.05 * x[:, :2], torch.zeros(len(x), 3, dtype=x.dtype)], dim=1)
        return DiagonalGaussian(mu, torch.full_like(mu, -1.0))


def test_active_units_count_units_whose_mean_depends_on_x():
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(5), dtype=D64)
    scalars, arrays = latent_analysis(ThreeActiveUnits(), x, batch_size=128)
    assert scalars["active_units"] == 3
    var = scalars["unit_variances"]
    assert len(var) == 8 and arrays["unit_variances"].shape == (8,)
    torch.testing.assert_close(arrays["unit_variances"][:3], x.var(0))      # sample variance of the mean
    assert var[:3] == pytest.approx([1.0] * 3, abs=0.2)
    assert var[3:5] == pytest.approx([0.0025] * 2, rel=0.2) and var[5:] == [0.0] * 3
    assert latent_analysis(ThreeActiveUnits(), x, threshold=1e-3)[0]["active_units"] == 5


# --- 5. determinism, chunk invariance, errors --------------------------------------------------------------

def test_deterministic_given_seed_and_independent_of_chunk():
    N, d = 120, 4
    g = torch.Generator().manual_seed(6)
    h = diag_heads(torch.randn(N, d, generator=g), torch.randn(N, d, generator=g) - 1)
    model = HeadModel(DiagonalGaussian, d)
    a_s, a_a = latent_analysis(model, h, batch_size=50, n_samples=2, seed=11, chunk=13)
    b_s, b_a = latent_analysis(model, h, batch_size=50, n_samples=2, seed=11, chunk=13)
    assert a_s == b_s and all(torch.equal(a_a[k], b_a[k]) for k in a_a)
    c_s, c_a = latent_analysis(model, h, batch_size=50, n_samples=2, seed=11, chunk=500)
    torch.testing.assert_close(c_a["log_q_z"], a_a["log_q_z"], rtol=1e-6, atol=1e-6)
    assert torch.equal(c_a["z"], a_a["z"])
    d_s, d_a = latent_analysis(model, h, batch_size=50, n_samples=2, seed=12, chunk=13)
    assert d_s["rate_nats"] == a_s["rate_nats"] and not torch.equal(d_a["z"], a_a["z"])
    assert d_s["marginal_kl_nats"] != a_s["marginal_kl_nats"]


@pytest.mark.parametrize("family", ["diagonal", "ar1"])
def test_real_model_runs_in_eval_mode_and_restores_training(family):
    cfg = {"architecture": {"name": "mlp", "hidden_dims": [32, 16]}, "latent_dim": 5, "posterior": {"name": family},
           "likelihood": {"name": "bernoulli"}, "objective": {"name": "elbo"}}
    torch.manual_seed(0)
    model = build_model(cfg, (1, 28, 28))
    x_uint8 = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = model.preprocess_fixed(x_uint8, seed=0, batch_size=16)
    model.train()
    scalars, arrays = latent_analysis(model, x, batch_size=16, n_samples=2, seed=0)
    assert model.training                                                   # mode restored
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(arrays["rate_per_image"], model.encode(x).kl().double(),  # float32,
                                   rtol=1e-5, atol=1e-5)                                     # other batching
    assert scalars == latent_analysis(model, x, batch_size=16, n_samples=2, seed=0)[0]
    assert not model.training
    assert scalars["latent_dim"] == 5 and len(scalars["unit_variances"]) == 5 and 0 <= scalars["active_units"] <= 5
    assert all(math.isfinite(scalars[k]) for k in ("rate_nats", "marginal_kl_nats", "mutual_info_nats"))
    assert scalars["mutual_info_nats"] <= math.log(40) + 0.5
    assert isinstance(scalars["active_units"], int) and all(isinstance(v, float) for v in scalars["unit_variances"])


@pytest.mark.parametrize("kwargs", [{"n": 1}, {"n": 0}, {"batch_size": 0}, {"n_samples": 0}, {"chunk": 0}])
def test_invalid_arguments_raise_value_error(kwargs):
    n = kwargs.pop("n", 5)
    with pytest.raises(ValueError):
        latent_analysis(HeadModel(DiagonalGaussian, 2), torch.zeros(n, 4), **kwargs)
