"""Decoder log-likelihoods vs torch.distributions; sigma-VAE optimal sigma vs numerical minimisers; soft clip."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, Normal

from vaebench.registry import LIKELIHOODS, UnknownComponentError
from vaebench.vae.functional import softclip
from vaebench.vae.likelihoods.bernoulli import Bernoulli as BernoulliLikelihood
from vaebench.vae.likelihoods.categorical import Categorical as CategoricalLikelihood


def GaussianLikelihood(sigma="fixed", sigma_value=None, **kw):
    """The Gaussian likelihood of a sigma mode, looked up by its registered name."""
    if sigma == "fixed" and sigma_value is not None:
        kw["sigma"] = sigma_value
    return LIKELIHOODS.get(f"gaussian_{sigma}")(**kw)

D64 = torch.float64


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


def test_softclip_vectors():
    # closed forms: 0.002476 = -6 + log(1 + e^6), -5.98185 = -6 + log(1 + e^-4)
    assert softclip(torch.tensor(0.0, dtype=D64), -6.0).item() == pytest.approx(0.002476, abs=1e-6)
    assert softclip(torch.tensor(-10.0, dtype=D64), -6.0).item() == pytest.approx(-5.98185, abs=1e-5)
    x = torch.linspace(-50, 50, 201, dtype=D64)
    y = softclip(x, -6.0)
    assert (y >= -6.0).all() and (y[1:] >= y[:-1]).all()
    torch.testing.assert_close(y[-1], torch.tensor(50.0, dtype=D64))


def test_bernoulli_matches_torch_distributions_with_sample_dim():
    x = (rand(4, 2, 5, 5) < 0.5).to(D64)
    out = randn(3, 4, 2, 5, 5) * 3
    lik = BernoulliLikelihood()
    ref = Bernoulli(logits=out).log_prob(x.expand_as(out)).sum((-3, -2, -1))
    torch.testing.assert_close(lik.log_prob(x, out), ref)
    torch.testing.assert_close(lik.mean(out), torch.sigmoid(out))


@pytest.mark.parametrize("sigma_value", [1.0, 0.1])
def test_gaussian_fixed_matches_normal(sigma_value):
    x, out = rand(4, 3, 5, 5), randn(2, 4, 3, 5, 5)
    lik = GaussianLikelihood("fixed", sigma_value=sigma_value)
    ref = Normal(torch.sigmoid(out), sigma_value).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(lik.log_prob(x, out), ref)


def test_gaussian_learned_shared_parameter():
    lik = GaussianLikelihood("learned_shared")
    raw = lik.raw_log_sigma
    assert raw.dtype == torch.float32 and raw.requires_grad and raw.item() == 0.0
    with torch.no_grad():
        raw.fill_(-1.3)
    x, out = rand(4, 1, 6, 6).float(), randn(4, 1, 6, 6).float()
    sigma = math.exp(softclip(torch.tensor(-1.3), -6.0).item())
    ref = Normal(torch.sigmoid(out), sigma).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(lik.log_prob(x, out), ref)
    lik.log_prob(x, out).sum().backward()
    assert raw.grad is not None


def _nll_grid(x, mean, log_sigmas, dims):
    """Gaussian NLL for each candidate log sigma: (G, ...) summed over dims."""
    sigma = torch.exp(log_sigmas).view(-1, *[1] * x.dim())
    return -Normal(mean, sigma).log_prob(x).sum(tuple(d + 1 for d in dims))


def test_optimal_shared_sigma_is_the_numerical_minimiser():
    x, out = rand(5, 1, 8, 8, seed=1), randn(5, 1, 8, 8, seed=2)
    lik = GaussianLikelihood("optimal_shared", log_sigma_min=-30.0)
    nll = -lik.log_prob(x, out).sum()
    grid = torch.linspace(-3.0, 0.5, 3501, dtype=D64)
    nll_grid = _nll_grid(x, torch.sigmoid(out), grid, (0, 1, 2, 3))
    assert nll.item() == pytest.approx(nll_grid.min().item(), abs=1e-3)
    assert nll.item() <= nll_grid.min().item() + 1e-9
    best = grid[nll_grid.argmin()].item()
    assert lik.log_sigma(x, out).item() == pytest.approx(best, abs=2e-3)
    assert lik.tracked_scalars() == {}              # nothing to report before an epoch has been frozen


def test_optimal_shared_closed_form_vector():
    # Rybkin et al. 2021: L = (D/2) ln MSE + D/2 + (D/2) ln 2 pi; D = 2352, batch MSE 0.01 -> (D/2) ln 0.01 + D/2 + (D/2) ln 2 pi = -2078.34 nats/image
    sign = torch.where(torch.arange(2352) % 2 == 0, 1.0, -1.0).to(D64).view(1, 3, 28, 28)
    x, out = 0.5 + 0.1 * sign, torch.zeros(1, 3, 28, 28, dtype=D64)         # sigmoid(0) = 0.5, MSE = 0.01
    lik = GaussianLikelihood("optimal_shared", log_sigma_min=-100.0)
    assert -lik.log_prob(x, out).item() == pytest.approx(-2078.34, abs=0.01)
    clipped = GaussianLikelihood("optimal_shared", log_sigma_min=-6.0)       # clip changes it only a little
    assert -clipped.log_prob(x, out).item() == pytest.approx(-2078.34, abs=5.0)


def test_optimal_shared_running_mse_for_evaluation():
    lik = GaussianLikelihood("optimal_shared")
    x1, o1, x2, o2 = rand(4, 1, 5, 5, seed=1), randn(4, 1, 5, 5, seed=2), rand(4, 1, 5, 5, seed=3), randn(4, 1, 5, 5, seed=4)
    mse = lambda x, o: ((x - torch.sigmoid(o)) ** 2).mean()
    lik.train()
    lik.log_prob(x1, o1, accumulate=True)
    lik.log_prob(x2, o2, accumulate=True)
    lik.eval()
    xe, oe = rand(4, 1, 5, 5, seed=5), randn(4, 1, 5, 5, seed=6)
    # before any end_epoch, evaluation falls back to the batch MSE
    fresh = GaussianLikelihood("optimal_shared")
    torch.testing.assert_close(lik.log_prob(xe, oe), fresh.log_prob(xe, oe))
    lik.end_epoch()
    frozen = (mse(x1, o1) + mse(x2, o2)) / 2
    ls = softclip(0.5 * torch.log(frozen), -6.0).item()
    torch.testing.assert_close(lik.log_prob(xe, oe), Normal(torch.sigmoid(oe), math.exp(ls)).log_prob(xe).sum((1, 2, 3)))
    assert "eval_mse" in lik.state_dict()
    assert lik.tracked_scalars()["effective_beta"] == pytest.approx(2 * math.exp(2 * ls))


def test_optimal_per_image_sigma_is_the_per_image_minimiser():
    x, out = rand(3, 2, 6, 6, seed=7), randn(3, 2, 6, 6, seed=8)
    x[0] = torch.sigmoid(out[0]) + 0.01 * randn(2, 6, 6, seed=9)               # one very well reconstructed image
    lik = GaussianLikelihood("optimal_per_image", log_sigma_min=-30.0)
    for mode in (True, False):
        lik.train(mode)
        nll = -lik.log_prob(x, out)
        grid = torch.linspace(-6.0, 0.5, 6501, dtype=D64)
        nll_grid = _nll_grid(x, torch.sigmoid(out), grid, (1, 2, 3))       # (G, 3)
        torch.testing.assert_close(nll, nll_grid.min(0).values, atol=1e-3, rtol=0)


def test_per_pixel_sigma_is_soft_clipped():
    x, out = rand(2, 1, 4, 4), randn(2, 2, 4, 4) * 3
    out[:, 1] = -1000.0                                                      # network asks for sigma -> 0
    lik = GaussianLikelihood("per_pixel", log_sigma_min=-6.0)
    assert lik.out_channels == 2
    ls = lik.log_sigma(x, out)
    assert ls.shape == (2, 1, 4, 4) and (ls >= -6.0).all()
    assert torch.isfinite(lik.log_prob(x, out)).all()
    out2 = randn(2, 2, 4, 4, seed=3)
    ref = Normal(torch.sigmoid(out2[:, :1]), torch.exp(softclip(out2[:, 1:], -6.0))).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(x, out2), ref)


def test_categorical_matches_cross_entropy_and_distribution():
    x = torch.randint(0, 256, (3, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    out = randn(3, 256 * 2, 4, 4)
    lik = CategoricalLikelihood()
    ce = F.cross_entropy(out.view(3, 256, 2, 4, 4), x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(lik.log_prob(x, out), -ce)
    logits = out.view(3, 256, 2, 4, 4).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(lik.log_prob(x, out), Categorical(logits=logits).log_prob(x).sum((1, 2, 3)))
    # with a sample dimension
    out_k = randn(2, 3, 512, 4, 4, seed=4)
    torch.testing.assert_close(lik.log_prob(x, out_k)[1], lik.log_prob(x, out_k[1]))


def test_categorical_uniform_is_exactly_8_bits_per_dim():
    x = torch.randint(0, 256, (2, 3, 5, 5))
    lik = CategoricalLikelihood()
    D = 3 * 5 * 5
    bpd = -lik.log_prob(x, torch.zeros(2, 256 * 3, 5, 5, dtype=D64)) / (D * math.log(2))
    torch.testing.assert_close(bpd, torch.full((2,), 8.0, dtype=D64))
    torch.testing.assert_close(lik.mean(torch.zeros(1, 256, 2, 2)), torch.full((1, 1, 2, 2), 127.5 / 255))


def test_preprocess_data_spaces():
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    b = BernoulliLikelihood().preprocess(x, torch.Generator().manual_seed(1))
    assert b.dtype == torch.float32 and set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[0, 0, 0, 0] == 0 and b[0, 0, 0, 1] == 1
    torch.testing.assert_close(b, BernoulliLikelihood().preprocess(x, torch.Generator().manual_seed(1)))
    y = GaussianLikelihood().preprocess(x, torch.Generator().manual_seed(1))
    assert (y >= x / 256.0).all() and (y < (x.float() + 1) / 256.0).all()
    c = CategoricalLikelihood().preprocess(x)
    assert c.dtype == torch.long and torch.equal(c, x.long())
    with pytest.raises(ValueError):
        BernoulliLikelihood().preprocess(x.float())


def test_discrete_offsets_and_config_errors():
    assert GaussianLikelihood().discrete_offset_nats(784) == pytest.approx(784 * math.log(256))
    assert BernoulliLikelihood().discrete_offset_nats(784) == 0.0
    assert CategoricalLikelihood().discrete_offset_nats(784) == 0.0
    with pytest.raises(UnknownComponentError, match="likelihood.name: unknown value 'poisson'.*gaussian_fixed"):
        LIKELIHOODS.build({"name": "poisson"})
    with pytest.raises(ValueError, match="likelihood.sigma"):
        GaussianLikelihood("fixed", sigma_value=0.0)


def test_metadata_of_every_likelihood():
    """What the pipeline reports with each number is declared on the class, consistently."""
    meta = {cls.name: cls.metadata() for cls in LIKELIHOODS}
    assert {m["data_space"] for m in meta.values()} == {"binarised", "dequantised", "discrete"}
    gaussians = [n for n, m in meta.items() if m["likelihood_family"] == "gaussian"]
    assert sorted(meta[n]["sigma_mode"] for n in gaussians) == sorted(
        ["fixed", "learned_shared", "optimal_shared", "optimal_per_image", "per_pixel"])
    assert [n for n, m in meta.items() if not m["valid_density"]] == ["gaussian_optimal_per_image"]
    for name, m in meta.items():
        cls = LIKELIHOODS.get(name)
        assert m["likelihood"] == name and m["likelihood_description"]
        # the offset to a discrete bound is D ln 256 exactly for the dequantised data space
        assert cls.discrete_offset_nats(cls.__new__(cls), 10) == pytest.approx(
            10 * math.log(256) if m["data_space"] == "dequantised" else 0.0)


def test_draws_follow_each_decoder():
    """Draws x ~ p(x|z) on the [0, 1] scale: binary for Bernoulli, a 256-level intensity for the categorical
    decoder, mean + sigma * eps (clamped) for Gaussians; none for per-image sigma (it needs the data)."""
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    logits = randn(4000, 1, 2, 2, seed=1)
    d = BernoulliLikelihood().draw(logits, g())
    assert set(d.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(d.mean(0), torch.sigmoid(logits).mean(0), atol=0.03, rtol=0)
    cat = CategoricalLikelihood()
    out = randn(2000, 256, 1, 1, seed=2)
    d = cat.draw(out, g())
    assert torch.equal(d * 255, (d * 255).round()) and d.min() >= 0 and d.max() <= 1
    torch.testing.assert_close(d.mean(0), cat.mean(out).mean(0), atol=0.03, rtol=0)
    lik = GaussianLikelihood("fixed", sigma_value=0.05)
    out = torch.zeros(20000, 1, 1, 1, dtype=D64)                   # mean sigmoid(0) = 0.5, far from the clamp
    d = lik.draw(out, g())
    assert d.mean().item() == pytest.approx(0.5, abs=0.002) and d.std().item() == pytest.approx(0.05, rel=0.03)
    assert GaussianLikelihood("optimal_per_image").draw(out, g()) is None
    per_pixel = GaussianLikelihood("per_pixel")
    out2 = torch.cat([torch.zeros(20000, 1, 1, 1, dtype=D64), torch.full((20000, 1, 1, 1), -3.0, dtype=D64)], 1)
    assert per_pixel.draw(out2, g()).std().item() == pytest.approx(softclip(torch.tensor(-3.0), -6.0).exp().item(),
                                                                   rel=0.03)


def test_discretised_column_is_a_distribution_over_8bit_images():
    """The Gaussian decoders' discretised column sums to 1 over the 256 values of a pixel (for the sigma the
    decoder uses) and is tighter than the dequantised bound's per-pixel density times the bin width at
    saturated pixels (open edge bins)."""
    lik = GaussianLikelihood("fixed", sigma_value=0.1)
    out = randn(1, 1, 1, 1, seed=4)
    levels = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1)
    x = (levels.double() + 0.5) / 256
    logp = torch.stack([lik.extra_log_probs(x[i : i + 1], levels[i : i + 1], out)["discretised"] for i in range(256)])
    assert torch.logsumexp(logp.flatten(), 0).item() == pytest.approx(0.0, abs=1e-9)
