"""InfoVAE's MMD estimator against an independent numpy double loop and its statistical properties; the
objective's loss against its closed form; its config rules."""
import math

import pytest
import torch

from vaebench.config import ConfigError, validate_model
from vaebench.vae.objectives.elbo import ELBO
from vaebench.vae.objectives.info_vae import InfoVAE, mmd2_unbiased

D64 = torch.float64


def mmd2_numpy(x, y, kernel, scale):
    """Direct double loop over pairs (Gretton et al. 2012, Lemma 6), independent of the torch code."""
    def k(a, b):
        sq = float(((a - b) ** 2).sum())
        return scale / (scale + sq) if kernel == "imq" else math.exp(-sq / scale)
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_matches_numpy_double_loop(kernel):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=D64), 0.5 + torch.randn(5, 3, generator=g, dtype=D64)
    ours = mmd2_unbiased(x, y, kernel, scale=6.0).item()
    assert ours == pytest.approx(mmd2_numpy(x.numpy(), y.numpy(), kernel, 6.0), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_zero_in_mean_for_one_distribution_and_grows_with_a_shift(kernel):
    g = torch.Generator().manual_seed(1)
    d, n, reps = 4, 64, 200
    same = torch.stack([mmd2_unbiased(torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, d, generator=g, dtype=D64),
                                      kernel, 2.0 * d) for _ in range(reps)])
    se = same.std() / math.sqrt(reps)
    assert abs(same.mean().item()) < 3 * se.item()             # unbiased: mean 0 within its standard error
    assert (same < 0).any()                                   # a single estimate can be negative
    shifted = []
    for shift in (0.5, 1.0, 2.0):
        vals = [mmd2_unbiased(torch.randn(n, d, generator=g, dtype=D64),
                              shift + torch.randn(n, d, generator=g, dtype=D64), kernel, 2.0 * d) for _ in range(20)]
        shifted.append(torch.stack(vals).mean().item())
    assert 0 < shifted[0] < shifted[1] < shifted[2]


def test_mmd_is_differentiable_and_checks_shapes():
    x = torch.randn(6, 2, requires_grad=True)
    mmd2_unbiased(x, torch.randn(6, 2)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        mmd2_unbiased(torch.randn(1, 2), torch.randn(4, 2))
    with pytest.raises(ValueError):
        mmd2_unbiased(torch.randn(4, 2), torch.randn(4, 3))


def _terms(B=8, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"log_px": -10 * torch.rand(B, generator=g, dtype=D64), "kl": torch.rand(B, generator=g, dtype=D64),
            "z": torch.randn(B, d, generator=g, dtype=D64)}


def test_info_vae_loss_is_its_closed_form():
    terms = _terms()
    obj = InfoVAE(alpha=0.3, lambda_=50.0, kernel="imq", kernel_variance=2.0)
    torch.manual_seed(5)
    loss, logs = obj(terms)
    torch.manual_seed(5)
    z_prior = torch.randn_like(terms["z"])                      # the objective's prior draws
    mmd = mmd2_numpy(terms["z"].numpy(), z_prior.numpy(), "imq", 2.0 * 3 * 2.0)
    expected = (-terms["log_px"] + 0.7 * terms["kl"]).mean().item() + (0.3 + 50.0 - 1.0) * mmd
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert logs["mmd"] == pytest.approx(mmd, rel=1e-10)
    assert logs["elbo"] == pytest.approx((terms["log_px"] - terms["kl"]).mean().item())
    assert obj.kl_weight == pytest.approx(0.7) and obj.needs_z and "mmd" in obj.batch_terms


def test_alpha_0_lambda_1_is_the_elbo():
    terms = _terms(seed=3)
    loss, _ = InfoVAE(alpha=0.0, lambda_=1.0)(terms)
    ref, _ = ELBO()(terms)
    assert loss.item() == ref.item()


def test_config_rejects_a_negative_mmd_weight():
    cfg = {"latent_dim": 4, "architecture": {"name": "mlp"}, "posterior": {"name": "ar1"},
           "likelihood": {"name": "bernoulli"}, "objective": {"name": "info_vae", "alpha": -2.0, "lambda": 1.0}}
    with pytest.raises(ConfigError, match="objective.*alpha \\+ lambda - 1"):
        validate_model(cfg)
    cfg["objective"] = {"name": "info_vae", "alpha": 1.5}
    with pytest.raises(ConfigError, match="'objective.alpha': 1.5.*less than or equal to 1"):
        validate_model(cfg)
    cfg["objective"] = {"name": "info_vae", "kernel": "laplace"}
    with pytest.raises(ConfigError, match="'objective.kernel'.*'imq' or 'rbf'"):
        validate_model(cfg)
