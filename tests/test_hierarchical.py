"""The hierarchical VAE (architecture ``iwae_mlp2``, ``vaebench.vae.hierarchical``): log w against a dense
torch.distributions reference, the ELBO / L_k relations, the path KL against Monte Carlo, training with every
objective that reads only the terms, sampling and reconstruction, the latent-analysis interface, and the catalogue
entries and their validation."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from conftest import (TERMS_OBJECTIVES, assert_invalid_models, assert_state_dict_round_trip, binary_patterns,
                      train_and_score)
from vaebench.config import ConfigError, load_catalogue
from vaebench.metrics.bounds import block_bound
from vaebench.registry import ARCHITECTURES
from vaebench.vae import VAE, build_model
from vaebench.vae.hierarchical import HierarchicalVAE

SHAPE = (1, 6, 6)
D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def config(posterior="diagonal", objective=None, latent_dims=(5, 3), hidden=((16,), (8,))) -> dict:
    return {"latent_dim": sum(latent_dims),
            "architecture": {"name": "iwae_mlp2", "latent_dims": list(latent_dims),
                             "hidden_dims": [list(h) for h in hidden]},
            "posterior": {"name": posterior}, "likelihood": {"name": "bernoulli"},
            "objective": objective or {"name": "elbo"}}


def tiny(posterior="diagonal", objective=None, seed=0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    return build_model(config(posterior, objective), SHAPE)


def patterns(n: int, seed: int) -> torch.Tensor:
    return binary_patterns(n, seed, SHAPE)


def gaussian(head: torch.Tensor, posterior: str, d: int):
    """torch.distributions reference of a posterior head (N, head_dim), in float64: Normal (diagonal) or
    MultivariateNormal with C_ij = s rho^|i-j| (ar1)."""
    head = head.double()
    if posterior == "diagonal":
        mu, logvar = head.chunk(2, dim=-1)
        return Normal(mu, torch.exp(0.5 * logvar)), True
    mu, a, log_s = head[:, :d], head[:, d:d + 1], head[:, d + 1:d + 2]
    i = torch.arange(d, dtype=head.dtype)
    lag = (i[:, None] - i[None, :]).abs()
    cov = torch.exp(log_s)[:, :, None] * torch.tanh(a)[:, :, None] ** lag
    return MultivariateNormal(mu, covariance_matrix=cov), False


def log_density(dist_and_diag, h):
    dist, diag = dist_and_diag
    lp = dist.log_prob(h.double())
    return lp.sum(-1) if diag else lp


@pytest.mark.parametrize("posterior", ["diagonal", "ar1"])
def test_log_w_and_kl_equal_a_dense_reference(posterior):
    """log w = log p(x|h1) + log p(h1|h2) + log p(h2) - log q(h1|x) - log q(h2|h1) (Burda et al. 2016) and the
    KL term log q(h1|x) - log p(h1|h2) + KL(q(h2|h1) || N(0, I)), recomputed with torch.distributions from the
    model's network outputs at the model's own sampled h1, h2."""
    model = tiny(posterior)
    x = model.preprocess(patterns(5, 0), generator=torch.Generator().manual_seed(1))
    d1, d2 = model.layer_dims
    k = 4
    with torch.no_grad():
        t = model.forward_terms(x, k=k, need_z=True, generator=torch.Generator().manual_seed(2))
        h1, h2 = t["z"][..., :d1], t["z"][..., d1:]
        assert t["log_w"].shape == (k, 5) and t["z"].shape == (k, 5, d1 + d2) and t["kl"].shape == (5,)
        std_normal = Normal(torch.zeros((), dtype=D64), torch.ones((), dtype=D64))
        q1 = gaussian(model.encoder(x), posterior, d1)
        log_q1 = log_density(q1, h1)
        log_q2 = log_density(gaussian(model.up[0](h1.reshape(-1, d1)), posterior, d2), h2.reshape(-1, d2))
        log_p1 = log_density(gaussian(model.down[0](h2.reshape(-1, d2)), "diagonal", d1), h1.reshape(-1, d1))
        log_p2 = std_normal.log_prob(h2.double()).sum(-1)
        logits = model.decoder(h1.reshape(-1, d1)).double()
        log_px = Bernoulli(logits=logits).log_prob(x.double().repeat(k, 1, 1, 1)).sum((1, 2, 3)).view(k, 5)
        ref = log_px + log_p1.view(k, 5) + log_p2 - log_q1 - log_q2.view(k, 5)
        close = dict(rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(t["log_w"].double(), ref, **close)
        torch.testing.assert_close(t["log_px"].double(), log_px, **close)
        # the densities the model exposes give the same log w
        q = model.encode(x)
        torch.testing.assert_close(t["log_px"] + model.prior_log_prob(t["z"]) - q.log_prob(t["z"]), t["log_w"],
                                   **close)

        t1 = model.forward_terms(x, k=None, need_z=True, generator=torch.Generator().manual_seed(3))
        h1, h2 = t1["z"][:, :d1], t1["z"][:, d1:]
        q2, _ = gaussian(model.up[0](h1), posterior, d2)
        top = (kl_divergence(q2, std_normal).sum(-1) if posterior == "diagonal" else
               kl_divergence(q2, MultivariateNormal(torch.zeros(d2, dtype=D64), torch.eye(d2, dtype=D64))))
        kl_ref = log_density(q1, h1) - log_density(gaussian(model.down[0](h2), "diagonal", d1), h1) + top
        torch.testing.assert_close(t1["kl"].double(), kl_ref, **close)


def test_elbo_is_the_mean_log_weight_and_L_k_grows_with_k():
    """E[log w] = E[log p(x|h1) - KL term] (both unbiased ELBO estimates: 4 standard errors), and on the same
    (paired) draws E[L_1] <= E[L_5] <= E[L_50] (Burda et al. 2016, Theorem 1)."""
    model = tiny()
    B, n = 4, 4000
    x = model.preprocess(patterns(B, 3), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        log_w = model.log_weights(x, n, generator=torch.Generator().manual_seed(5))            # (n, B)
        elbo = model.elbo_terms(x.repeat(n, 1, 1, 1), generator=torch.Generator().manual_seed(6))["elbo"].view(n, B)
    diff = log_w.mean(0) - elbo.mean(0)
    se = torch.sqrt(log_w.var(0) / n + elbo.var(0) / n)
    assert (diff.abs() < 4 * se).all(), (diff, se)
    bounds = [float(block_bound(log_w, m).mean()) for m in (1, 5, 50)]
    assert bounds[0] == pytest.approx(float(log_w.double().mean()), rel=1e-12)
    assert bounds[0] < bounds[1] < bounds[2], bounds


@pytest.mark.parametrize("posterior", ["diagonal", "ar1"])
def test_kl_term_matches_monte_carlo(posterior):
    """The KL term (top layer in closed form at the sampled h1, lower layer sampled) estimates
    KL(q(h1, h2 | x) || p(h1, h2)) = E_q[log q - log p]: its mean over many draws equals a Monte Carlo mean of
    log q(h|x) - log p(h) on independent paths within 4 standard errors; and the top layer's closed form equals
    Monte Carlo over h2 at a fixed h1."""
    model = tiny(posterior, seed=1)
    B, n = 3, 20000
    x = model.preprocess(patterns(B, 7), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        kl = model.forward_terms(x.repeat(n, 1, 1, 1), generator=torch.Generator().manual_seed(9))["kl"].view(n, B)
        q = model.encode(x)
        h = q.rsample(n, generator=torch.Generator().manual_seed(10))                           # (n, B, D)
        mc = q.log_prob(h) - model.prior_log_prob(h)
        se = torch.sqrt(kl.var(0) / n + mc.var(0) / n)
        assert ((kl.mean(0) - mc.mean(0)).abs() < 4 * se).all(), (kl.mean(0), mc.mean(0), se)

        h1 = q.first.rsample(generator=torch.Generator().manual_seed(11))                        # (B, d1)
        q2 = q.conditional(1, h1)
        h2 = q2.rsample(n, generator=torch.Generator().manual_seed(12))                          # (n, B, d2)
        mc2 = q2.log_prob(h2) + 0.5 * (h2.pow(2) + math.log(2 * math.pi)).sum(-1)
        assert ((q2.kl() - mc2.mean(0)).abs() < 4 * mc2.std(0) / math.sqrt(n)).all()


@pytest.mark.parametrize("posterior", ["diagonal", "ar1"])
@pytest.mark.parametrize("objective", sorted(TERMS_OBJECTIVES))
def test_trains_with_every_terms_objective(objective, posterior):
    """300 Adam steps on patterned binary 6x6 images lower the reconstruction NLL and raise the ELBO on held-out
    images (mean of 20 draws each), whatever the objective; the loss itself falls for the fixed-weight objectives."""
    model = tiny(posterior, TERMS_OBJECTIVES[objective], seed=2)
    data = model.preprocess(patterns(512, 13))
    held = model.preprocess(patterns(64, 14)).repeat(20, 1, 1, 1)
    (recon0, elbo0), (recon1, elbo1), losses = train_and_score(model, data, held, steps=300)
    assert recon1 < recon0 - 3.0 and elbo1 > elbo0 + 3.0, (recon0, recon1, elbo0, elbo1)
    if objective != "geco":
        assert sum(losses[-20:]) < sum(losses[:20])


def test_sample_reconstruct_and_latent_interface():
    model = tiny()
    model.eval()
    d1, d2 = model.layer_dims
    x = model.preprocess(patterns(7, 17), generator=torch.Generator().manual_seed(18))
    for kw in ({}, {"latent_means": True}):
        s = model.sample(9, generator=torch.Generator().manual_seed(19), **kw)
        assert s.shape == (9, *SHAPE) and s.min() >= 0 and s.max() <= 1
        assert torch.equal(s, model.sample(9, generator=torch.Generator().manual_seed(19), **kw))
    draws = model.sample(9, generator=torch.Generator().manual_seed(20), draw=True)
    assert draws.shape == (9, *SHAPE) and set(draws.unique().tolist()) <= {0.0, 1.0}
    r = model.reconstruct(x)
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(r, torch.sigmoid(model.decoder(model.encode(x).first.mean)))
    # latent analysis: the concatenated path of posterior means, split by layer_dims
    q = model.encode(x)
    assert q.layer_dims == model.layer_dims == (5, 3) and model.latent_dim == q.latent_dim == d1 + d2
    m1, m2 = q.split(q.mean)
    assert m1.shape == (7, d1) and m2.shape == (7, d2)
    with torch.no_grad():
        torch.testing.assert_close(m2, q.conditional(1, m1).mean)
        z = q.rsample(3, generator=torch.Generator().manual_seed(21))
        assert z.shape == (3, 7, d1 + d2) and q.log_prob(z).shape == (3, 7) and q.kl().shape == (7,)
        assert torch.equal(q.kl(), q.kl())               # without a generator: a function of x
        # broadcasting as the aggregate posterior uses it: points (M, 1, D) against the batch -> (M, B)
        pts = z[0]
        grid = q.log_prob(pts.unsqueeze(1))
        loop = torch.stack([q.log_prob(p.expand(7, -1)) for p in pts])
        torch.testing.assert_close(grid, loop)
    from vaebench.metrics.latent import latent_analysis

    scalars, arrays = latent_analysis(model, x, batch_size=4)
    assert scalars["latent_dim"] == d1 + d2 and 0 <= scalars["active_units"] <= d1 + d2
    assert arrays["unit_variances"].shape == (d1 + d2,) and math.isfinite(scalars["rate_nats"])


def test_catalogue_entries_build_and_bad_sizes_are_rejected():
    catalogue = load_catalogue("catalogue.yaml")
    for name, objective in (("iwae_2layer_vae", "elbo"), ("iwae_2layer_iwae", "iwae")):
        entry = {k: v for k, v in catalogue[name].items() if k not in ("train", "evaluate")}
        torch.manual_seed(0)
        model = build_model(entry, (1, 28, 28))
        assert isinstance(model, HierarchicalVAE) and isinstance(model, VAE)
        assert model.layer_dims == (100, 50) and model.latent_dim == 150 and model.objective.name == objective
        assert model.likelihood.name == "bernoulli" and model.posterior.name == "diagonal"
        linears = lambda net: [(m.in_features, m.out_features) for m in net.modules()  # noqa: E731
                               if isinstance(m, torch.nn.Linear)]
        assert linears(model.encoder) == [(784, 200), (200, 200), (200, 200)]        # [mu, logvar] of h1 (100)
        assert linears(model.up[0]) == [(100, 100), (100, 100), (100, 100)]          # of h2 (50)
        assert linears(model.down[0]) == [(50, 100), (100, 100), (100, 200)]         # p(h1|h2) (100)
        assert linears(model.decoder) == [(100, 200), (200, 200), (200, 784)]
        heads = {id(model.encoder.net[-1]): 100, id(model.up[0][-1]): 50, id(model.down[0][-1]): 100}
        for m in model.modules():                 # Glorot uniform (a head: fan_out of one parameter block), bias 0
            if isinstance(m, torch.nn.Linear):
                bound = math.sqrt(6 / (m.in_features + heads.get(id(m), m.out_features)))
                assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound and not m.bias.any()
        x = model.preprocess(patterns(2, 0).repeat(1, 1, 5, 5)[:, :, :28, :28])
        assert torch.isfinite(model.training_loss(x)[0])
        if objective == "iwae":
            assert model.objective.k == catalogue["iwae"]["objective"]["k"]

    good = {k: v for k, v in catalogue["iwae_2layer_vae"].items() if k != "description"}
    bad_cases = [({**good, "latent_dim": 50}, "at 'models.x.latent_dim': must equal the size of the whole latent path"),
                 ({**good, "architecture": {"name": "iwae_mlp2", "hidden_dims": [[200], [100], [50]]}},
                  "at 'models.x.architecture.hidden_dims': needs one list of hidden widths per stochastic layer"),
                 ({**good, "architecture": {"name": "iwae_mlp2", "latent_dims": [50]}},
                  "at 'models.x.architecture.latent_dims'"),
                 ({**good, "objective": {"name": "info_vae"}}, "at 'models.x.objective.name'")]
    assert_invalid_models(bad_cases)
    model = tiny(seed=3)
    assert_state_dict_round_trip(model, tiny(seed=4),
                                 model.preprocess(patterns(3, 22), generator=torch.Generator().manual_seed(23)))
    # the size check of vaebench.validation (networks on the meta device) and a direct build
    arch = ARCHITECTURES.build({"name": "iwae_mlp2"})
    with torch.device("meta"):
        arch.build((3, 64, 64), 150, 300, 1)
    with pytest.raises(ValueError, match="latent_dim: must equal"):
        arch.build((1, 28, 28), 20, 40, 1)
    with pytest.raises(ValueError, match="architecture.hidden_dims"):
        ARCHITECTURES.build({"name": "iwae_mlp2", "latent_dims": [4, 2, 1], "hidden_dims": [[8], [4]]})
    with pytest.raises(ConfigError, match="invalid combination at 'latent_dim': must equal"):
        build_model({**config(), "latent_dim": 3}, SHAPE)
