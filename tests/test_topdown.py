"""The top-down hierarchical VAE (architecture ``topdown_conv``, ``vaebench.vae.topdown``): the per-layer KL in closed
form against torch.distributions, log w against a torch.distributions reference at the model's own sampled path,
the closed-form ELBO against the mean log weight (unbiased under top-down inference) and L_k's growth in k, the
KL against Monte Carlo, training with every objective that reads only the terms, sampling, reconstruction and the
per-layer latent analysis, the catalogue entry and size validation."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from conftest import (TERMS_OBJECTIVES, assert_invalid_models, assert_state_dict_round_trip, binary_patterns,
                      train_and_score)
from vaebench.config import load_catalogue
from vaebench.metrics.bounds import block_bound
from vaebench.metrics.latent import latent_analysis
from vaebench.registry import ARCHITECTURES
from vaebench.vae import VAE, build_model
from vaebench.vae.posteriors.ar1 import AR1Gaussian
from vaebench.vae.posteriors.diagonal import DiagonalGaussian
from vaebench.vae.topdown import TopDownVAE

SHAPE = (1, 8, 8)
GROUPS = [(2, 4), (3, 2)]                     # (channels, size), bottom first: d = 32 + 12
D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def config(posterior="diagonal", objective=None, groups=GROUPS, width=8, likelihood=None) -> dict:
    return {"latent_dim": sum(c * s * s for c, s in groups),
            "architecture": {"name": "topdown_conv", "groups": [{"channels": c, "size": s} for c, s in groups],
                             "width": width},
            "posterior": {"name": posterior}, "likelihood": likelihood or {"name": "bernoulli"},
            "objective": objective or {"name": "elbo"}}


def tiny(posterior="diagonal", objective=None, seed=0) -> TopDownVAE:
    torch.manual_seed(seed)
    return build_model(config(posterior, objective), SHAPE)


def patterns(n: int, seed: int) -> torch.Tensor:
    return binary_patterns(n, seed, SHAPE)


def reference(q) -> torch.distributions.Distribution:
    """torch.distributions twin of a posterior object, float64: independent Normals (summed by the caller) or the
    AR(1) MultivariateNormal with C_ij = s rho^|i-j|."""
    if isinstance(q, DiagonalGaussian):
        return Normal(q.mu.double(), torch.exp(0.5 * q.logvar.double()))
    d = q.mu.shape[-1]
    i = torch.arange(d, dtype=D64)
    cov = torch.exp(q.log_s.double())[:, :, None] * torch.tanh(q.a.double())[:, :, None] ** (i[:, None] - i[None, :]).abs()
    return MultivariateNormal(q.mu.double(), covariance_matrix=cov)


def dense(q) -> MultivariateNormal:
    """Either family (or a conditional prior) as a float64 MultivariateNormal with its full covariance."""
    ref = reference(q)
    return ref if isinstance(ref, MultivariateNormal) else MultivariateNormal(ref.loc, torch.diag_embed(ref.scale ** 2))


def ref_log_prob(dist, z):
    lp = dist.log_prob(z.double())
    return lp.sum(-1) if isinstance(dist, Normal) else lp


@pytest.mark.parametrize("family", [DiagonalGaussian, AR1Gaussian])
def test_kl_to_a_diagonal_gaussian_matches_torch_distributions(family):
    """KL(q || N(mu_p, diag sigma_p^2)) in closed form equals torch.distributions' for both families, extreme
    parameters included; at mu_p = 0, sigma_p = 1 it is the posterior's own KL to N(0, I)."""
    g = torch.Generator().manual_seed(0)
    B, d = 6, 5
    head = torch.randn(B, family.head_dim(d), generator=g, dtype=D64) * 2
    head[0] *= 4                                                  # large means, tiny and huge variances
    q = family.from_head(head, d)
    mu_p, logvar_p = torch.randn(B, d, generator=g, dtype=D64) * 3, torch.randn(B, d, generator=g, dtype=D64) * 3
    p = Normal(mu_p, torch.exp(0.5 * logvar_p))
    ref = kl_divergence(dense(q), MultivariateNormal(mu_p, torch.diag_embed(torch.exp(logvar_p))))
    torch.testing.assert_close(q.kl_to_diagonal(mu_p, logvar_p), ref, rtol=1e-9, atol=1e-8)
    if family is DiagonalGaussian:
        torch.testing.assert_close(q.kl_to_diagonal(mu_p, logvar_p), kl_divergence(reference(q), p).sum(-1))
    zeros = torch.zeros(B, d, dtype=D64)
    torch.testing.assert_close(q.kl_to_diagonal(zeros, zeros), q.kl(), rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="kl_to_diagonal"):
        q.kl_to_diagonal(zeros[:, :2], zeros[:, :2])


@pytest.mark.parametrize("posterior", ["diagonal", "ar1"])
def test_log_w_and_per_layer_kl_equal_a_torch_distributions_reference(posterior):
    """At the model's own sampled path (same generator): log w = log p(x|z) + sum_l [log p(z_l|z_>l) -
    log q(z_l|x, z_>l)] and kl = sum_l KL(q(z_l|x, z_>l) || p(z_l|z_>l)) (top: N(0, I)), recomputed with
    torch.distributions from the path's distributions; ``encode(x).log_prob`` and ``prior_log_prob`` at the
    returned z rerun the top-down pass and give the same densities."""
    model = tiny(posterior)
    x = model.preprocess(patterns(5, 0), generator=torch.Generator().manual_seed(1))
    k, close = 3, dict(rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        t = model.forward_terms(x, k=k, need_z=True, generator=torch.Generator().manual_seed(2))
        path = model.encode(x).path(k, torch.Generator().manual_seed(2))
        assert t["log_w"].shape == (k, 5) and t["z"].shape == (k, 5, model.latent_dim) and t["kl"].shape == (5,)
        log_px = Bernoulli(logits=model.decoder(path.h).double()).log_prob(x.double().repeat(k, 1, 1, 1))
        log_px = log_px.sum((1, 2, 3))
        log_q = sum(ref_log_prob(reference(q), z) for q, z in zip(path.qs, path.zs))
        std = Normal(torch.zeros((), dtype=D64), torch.ones((), dtype=D64))
        log_p = std.log_prob(path.zs[-1].double()).sum(-1) + sum(
            ref_log_prob(reference(p), z) for p, z in zip(path.ps[:-1], path.zs[:-1]))
        torch.testing.assert_close(t["log_w"].double(), (log_px + log_p - log_q).view(k, 5), **close)
        torch.testing.assert_close(t["log_px"].double(), log_px.view(k, 5), **close)
        top = path.qs[-1]
        d_top = top.mu.shape[-1]
        kl_top = kl_divergence(dense(top), MultivariateNormal(torch.zeros(d_top, dtype=D64), torch.eye(d_top, dtype=D64)))
        kl_lower = [kl_divergence(dense(q), dense(p)) for q, p in zip(path.qs[:-1], path.ps[:-1])]
        kl_ref = [*kl_lower, kl_top]
        torch.testing.assert_close(sum(kl_ref).view(k, 5).mean(0), t["kl"].double(), **close)
        for got, ref in zip(t["kl_layers"], kl_ref):
            torch.testing.assert_close(got.double(), ref.view(k, 5).mean(0), **close)
        q = model.encode(x)
        torch.testing.assert_close(t["log_px"] + model.prior_log_prob(t["z"]) - q.log_prob(t["z"]), t["log_w"],
                                   **close)


def test_closed_form_elbo_is_the_mean_log_weight_and_L_k_grows_with_k():
    """Top-down inference conditions q(z_l|.) and p(z_l|.) on the same sampled z_>l, so log p(x|z) - sum_l KL_l
    (closed form per layer) and log w are unbiased estimates of the same ELBO: their means over many draws agree
    within 4 standard errors; on the same draws E[L_1] < E[L_5] < E[L_50] (Burda et al. 2016, Theorem 1)."""
    model = tiny(seed=1)
    B, n = 4, 3000
    x = model.preprocess(patterns(B, 3), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        log_w = model.log_weights(x, n, generator=torch.Generator().manual_seed(5))            # (n, B)
        elbo = model.elbo_terms(x.repeat(n, 1, 1, 1), generator=torch.Generator().manual_seed(6))["elbo"].view(n, B)
    diff = log_w.mean(0) - elbo.mean(0)
    se = torch.sqrt(log_w.var(0) / n + elbo.var(0) / n)
    assert (diff.abs() < 4 * se).all(), (diff, se)
    bounds = [float(block_bound(log_w, m).mean()) for m in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2], bounds


@pytest.mark.parametrize("posterior", ["diagonal", "ar1"])
def test_kl_term_matches_monte_carlo(posterior):
    """The closed-form KL term, averaged over paths, equals a Monte Carlo mean of log q(z|x) - log p(z) (the
    densities of the whole path, each rerunning the top-down pass) on independent paths within 4 standard errors."""
    model = tiny(posterior, seed=2)
    B, n = 3, 2000
    x = model.preprocess(patterns(B, 7), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        kl = model.forward_terms(x.repeat(n, 1, 1, 1), generator=torch.Generator().manual_seed(9))["kl"].view(n, B)
        q = model.encode(x)
        z = q.rsample(n, generator=torch.Generator().manual_seed(10))                             # (n, B, D)
        mc = q.log_prob(z) - model.prior_log_prob(z)
    se = torch.sqrt(kl.var(0) / n + mc.var(0) / n)
    assert ((kl.mean(0) - mc.mean(0)).abs() < 4 * se).all(), (kl.mean(0), mc.mean(0), se)


@pytest.mark.parametrize("objective, posterior",
                         [(o, "diagonal") for o in sorted(TERMS_OBJECTIVES)] + [("elbo", "ar1")])
def test_trains_with_every_terms_objective(objective, posterior):
    """150 Adam steps on patterned binary 8x8 images lower the reconstruction NLL and raise the ELBO on held-out
    images (mean of 10 draws each), whatever the objective, and with per-layer AR(1) posteriors."""
    model = tiny(posterior, TERMS_OBJECTIVES[objective], seed=3)
    data = model.preprocess(patterns(512, 13))
    held = model.preprocess(patterns(32, 14)).repeat(10, 1, 1, 1)
    (recon0, elbo0), (recon1, elbo1), _ = train_and_score(model, data, held, steps=150)
    assert recon1 < recon0 - 3.0 and elbo1 > elbo0 + 3.0, (recon0, recon1, elbo0, elbo1)


def test_sample_reconstruct_and_per_layer_latent_analysis():
    model = tiny(seed=4)
    model.eval()
    d1, d2 = model.layer_dims
    assert (d1, d2) == (32, 12) and model.z_shapes == [(2, 4, 4), (3, 2, 2)]
    x = model.preprocess(patterns(7, 17), generator=torch.Generator().manual_seed(18))
    for kw in ({}, {"latent_means": True}):
        s = model.sample(9, generator=torch.Generator().manual_seed(19), **kw)
        assert s.shape == (9, *SHAPE) and s.min() >= 0 and s.max() <= 1
        assert torch.equal(s, model.sample(9, generator=torch.Generator().manual_seed(19), **kw))
    draws = model.sample(9, generator=torch.Generator().manual_seed(20), draw=True)
    assert draws.shape == (9, *SHAPE) and set(draws.unique().tolist()) <= {0.0, 1.0}
    q = model.encode(x)
    with torch.no_grad():
        r = model.reconstruct(x)
        # the decoder mean at the final state of the plug-in path of posterior means
        given = model.descend(q.features, 7, model.given(q.split(q.mean)))
        torch.testing.assert_close(r, torch.sigmoid(model.decoder(given.h)))
        z = q.rsample(3, generator=torch.Generator().manual_seed(21))
        assert z.shape == (3, 7, d1 + d2) and q.log_prob(z).shape == (3, 7) and q.kl().shape == (7,)
        assert torch.equal(q.kl(), q.kl())               # without a generator: a function of x
        grid = q.log_prob(z[0].unsqueeze(1))             # points (M, 1, D) against the batch -> (M, B)
        loop = torch.stack([q.log_prob(p.expand(7, -1)) for p in z[0]])
        torch.testing.assert_close(grid, loop)
        with pytest.raises(ValueError, match="latent path of size 44"):
            q.log_prob(z[..., :10])
    scalars, arrays = latent_analysis(model, x, batch_size=4)
    assert scalars["layer_dims"] == [d1, d2] and scalars["latent_dim"] == d1 + d2
    assert sum(scalars["rate_per_layer_nats"]) == pytest.approx(scalars["rate_nats"], rel=1e-9)
    assert sum(scalars["active_units_per_layer"]) == scalars["active_units"]
    units = arrays["unit_variances"]
    assert scalars["active_units_per_layer"] == [int((u > 0.01).sum()) for u in units.split([d1, d2])]
    with torch.no_grad():
        rate = torch.cat([torch.stack(model.encode(x[i:i + 4]).kl_layers(), -1) for i in (0, 4)]).double().mean(0)
    assert scalars["rate_per_layer_nats"] == pytest.approx(rate.tolist(), rel=1e-9)


def test_catalogue_entry_builds_at_32x32_and_bad_sizes_are_rejected():
    catalogue = load_catalogue("catalogue.yaml")
    entry = {k: v for k, v in catalogue["hvae_sigma"].items() if k not in ("train", "evaluate")}
    torch.manual_seed(0)
    model = build_model(entry, (3, 32, 32))
    assert isinstance(model, TopDownVAE) and isinstance(model, VAE)
    assert model.z_shapes == [(8, 16, 16), (8, 8, 8), (8, 4, 4)] and model.latent_dim == 2688
    assert model.likelihood.name == "gaussian_learned_shared"
    x = model.preprocess(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert torch.isfinite(model.training_loss(x)[0])
    assert model.sample(2).shape == (2, 3, 32, 32)
    with torch.device("meta"):                       # vaebench.validation's size check
        ARCHITECTURES.build(entry["architecture"]).build((3, 64, 64), 2688, 2 * 2688, 1)
    with pytest.raises(ValueError, match="images must be square, their size the bottom group's size 16"):
        ARCHITECTURES.build(entry["architecture"]).build((3, 28, 28), 2688, 2 * 2688, 1)
    # 28x28 (MNIST) takes groups at 14 and 7
    mnist = config(groups=[(2, 14), (4, 7)])
    assert build_model(mnist, (1, 28, 28)).sample(2).shape == (2, 1, 28, 28)

    good = {k: v for k, v in entry.items() if k != "description"}
    arch = good["architecture"]
    bad_cases = [({**good, "latent_dim": 50}, "at 'models.x.latent_dim': must equal the size of the whole latent path"),
                 ({**good, "architecture": {**arch, "groups": [{"channels": 4, "size": 8}, {"channels": 4, "size": 3}]},
                   "latent_dim": 292}, "at 'models.x.architecture.groups': each group's size must be"),
                 ({**good, "architecture": {**arch, "groups": [{"channels": 4, "size": 8}]}, "latent_dim": 256},
                  "at 'models.x.architecture.groups'"),
                 ({**good, "objective": {"name": "info_vae"}}, "at 'models.x.objective.name'")]
    assert_invalid_models(bad_cases)
    model = tiny(seed=5)
    assert_state_dict_round_trip(model, tiny(seed=6),
                                 model.preprocess(patterns(3, 22), generator=torch.Generator().manual_seed(23)))
