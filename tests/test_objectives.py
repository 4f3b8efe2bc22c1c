"""IWAE bound, GECO and GECO+IWAE objectives: closed forms, invariances, stop-gradient trick, lambda dynamics."""
import math

import pytest
import torch

from vaebench.config import ConfigError
from vaebench.metrics.bounds import iwae_bound
from vaebench.registry import OBJECTIVES, UnknownComponentError
from vaebench.vae import build_model
from vaebench.vae.functional import log_mean_exp as iwae_log_mean_exp
from vaebench.vae.objectives.elbo import ELBO
from vaebench.vae.objectives.geco import GECO, GECOIWAE, stop_gradient_ma
from vaebench.vae.objectives.iwae import IWAE

D64 = torch.float64


def small_model(**objective):
    cfg = {"architecture": {"name": "mlp", "hidden_dims": [16]}, "latent_dim": 4, "posterior": {"name": "diagonal"},
           "likelihood": {"name": "bernoulli"}, "objective": objective or {"name": "elbo"}}
    torch.manual_seed(0)
    return build_model(cfg, (1, 6, 6))


def binary_batch(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 1, 6, 6, generator=g) < 0.4).float()


def test_iwae_log_mean_exp_closed_forms():
    a = torch.tensor([-3.0, 120.0, -1e4], dtype=D64)
    for k in (1, 5, 5000):
        torch.testing.assert_close(iwae_log_mean_exp(a.expand(k, 3)), a)           # identical weights -> a
    log_w = torch.randn(7, 4, dtype=D64)
    torch.testing.assert_close(iwae_log_mean_exp(log_w), torch.log(torch.exp(log_w).mean(0)))
    perm = torch.randperm(7)
    torch.testing.assert_close(iwae_log_mean_exp(log_w[perm]), iwae_log_mean_exp(log_w))
    assert (iwae_log_mean_exp(log_w) >= log_w.mean(0)).all()                       # Jensen: L_k >= mean of logs


def test_iwae_loss_is_minus_mean_L_k():
    log_w = torch.randn(5, 4, dtype=D64)
    terms = {"log_w": log_w, "log_px": torch.randn(5, 4, dtype=D64), "kl": torch.rand(4, dtype=D64)}
    loss, logs = IWAE(k=5)(terms)
    torch.testing.assert_close(loss, -torch.log(torch.exp(log_w).mean(0)).mean())
    assert logs["loss"] == pytest.approx(loss.item())


def test_elbo_beta_weights_the_summed_kl():
    terms = {"log_px": torch.tensor([-10.0, -20.0]), "kl": torch.tensor([3.0, 5.0])}
    loss, logs = ELBO(beta=0.5)(terms)
    assert loss.item() == pytest.approx(((10 + 1.5) + (20 + 2.5)) / 2)
    assert logs["recon"] == pytest.approx(15.0) and logs["kl"] == pytest.approx(4.0)
    assert logs["elbo"] == pytest.approx(-19.0)


def test_L1_equals_single_sample_elbo_estimator_with_same_eps():
    model = small_model()
    x = binary_batch()
    log_w = model.log_weights(x, 1, generator=torch.Generator().manual_seed(3))   # (1, B)
    q = model.encode(x)
    z = q.rsample(1, generator=torch.Generator().manual_seed(3))                  # same eps
    log_px = model.likelihood.log_prob(x, model.decode(z))
    mc_elbo = log_px - (q.log_prob(z) - (-0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)))
    torch.testing.assert_close(iwae_log_mean_exp(log_w), mc_elbo[0])
    # and its expectation is the closed-form-KL ELBO
    with torch.no_grad():
        l1 = model.log_weights(x, 20000, generator=torch.Generator().manual_seed(4)).mean(0)
        terms = model.forward_terms(x, k=20000, generator=torch.Generator().manual_seed(4))
        elbo_closed = (terms["log_px"].mean(0) - terms["kl"])
    torch.testing.assert_close(l1, elbo_closed, atol=0.05, rtol=0)


def test_L_k_non_decreasing_in_k_in_expectation():
    # L_1 <= L_5 <= L_50 for the expectations (Burda et al. 2016 Thm 1); averaged over repeats and images
    model = small_model()
    x = binary_batch(B=4, seed=1)
    g = torch.Generator().manual_seed(5)
    mean_L = {k: torch.stack([iwae_bound(model, x, k, generator=g) for _ in range(reps)]).mean().item()
              for k, reps in ((1, 200), (5, 200), (50, 50))}
    assert mean_L[1] < mean_L[5] - 0.1                  # gap ~0.25 nats, MC noise ~0.03
    assert mean_L[5] < mean_L[50] + 0.05                # gap ~0.06 nats, allow noise
    assert mean_L[1] < mean_L[50] - 0.1


class _FixedWeights:
    """Stand-in model whose log_weights hand out consecutive slices of a fixed (k, B) tensor."""

    def __init__(self, log_w):
        self.log_w, self.pos = log_w, 0

    def log_weights(self, x, n, generator=None):
        out = self.log_w[self.pos:self.pos + n]
        self.pos += n
        return out


def test_chunked_iwae_bound_equals_unchunked():
    log_w = torch.randn(1000, 3, dtype=D64) * 30 - 5000                      # large magnitudes
    full = iwae_log_mean_exp(log_w)
    for chunk in (1, 7, 100, 1000, 4000):
        torch.testing.assert_close(iwae_bound(_FixedWeights(log_w), None, 1000, chunk_size=chunk), full)
    model, x = small_model(), binary_batch()
    out = iwae_bound(model, x, 64, chunk_size=10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3,) and out.dtype == D64 and torch.isfinite(out).all()


def test_geco_stop_gradient_value_is_moving_average_and_gradient_is_batch():
    theta = torch.tensor(2.0, requires_grad=True)
    geco = GECO(constraint="sse", kappa=1.0, alpha=0.5, lambda_init=3.0, lambda_lr=0.1)
    geco.train()
    # step 1 initialises C_ma to the batch value
    sse = torch.stack([theta ** 2, 2 * theta ** 2])                         # mean SSE = 1.5 theta^2 = 6
    kl = torch.tensor([0.5, 1.5])
    loss, logs = geco({"log_px": -sse, "kl": kl, "sse": sse})
    assert logs["constraint"] == pytest.approx(6.0 - 1.0) and logs["lambda"] == pytest.approx(3.0)
    # step 2: C_hat = 1.5 theta^2 - 1 = 5; C_ma = 0.5*5 + 0.5*C_hat
    theta2 = torch.tensor(1.0, requires_grad=True)
    sse2 = torch.stack([theta2 ** 2, 2 * theta2 ** 2])                      # C_hat = 1.5 - 1 = 0.5
    loss2, logs2 = geco({"log_px": -sse2, "kl": kl, "sse": sse2})
    c_ma = 0.5 * 5.0 + 0.5 * 0.5
    lam2 = 3.0 * math.exp(0.1 * 5.0)                                        # lambda after step 1
    assert logs2["lambda"] == pytest.approx(lam2)
    assert logs2["constraint"] == pytest.approx(c_ma)
    assert loss2.item() == pytest.approx(kl.mean().item() + lam2 * c_ma)      # value: moving average
    loss2.backward()
    assert theta2.grad.item() == pytest.approx(lam2 * 3.0 * 1.0)             # gradient: d/dtheta lam*1.5 theta^2
    assert geco.tracked_scalars()["lambda"] == pytest.approx(lam2 * math.exp(0.1 * c_ma))
    assert {"log_lambda", "c_ma", "initialized"} <= set(geco.state_dict())


def test_geco_no_updates_in_eval_mode():
    geco = GECO(constraint="nll", kappa=10.0)
    geco.eval()
    terms = {"log_px": torch.tensor([-50.0]), "kl": torch.tensor([1.0])}
    for _ in range(3):
        loss, logs = geco(terms)
    assert logs["lambda"] == 1.0 and geco.initialized.item() == 0.0
    assert loss.item() == pytest.approx(1.0 + 1.0 * (50.0 - 10.0))


def test_geco_lambda_rises_while_violated_and_falls_once_satisfied():
    # toy problem: min theta^2  s.t.  (theta - 3)^2 - 1 <= 0  -> theta* = 2, KKT multiplier lambda* = 2
    theta = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.01)
    geco = GECO(constraint="sse", kappa=1.0, alpha=0.9, lambda_init=1.0, lambda_lr=0.01)
    geco.train()
    lams, cons = [], []
    for _ in range(450):
        sse = (theta - 3) ** 2
        loss, logs = geco({"log_px": -sse, "kl": theta ** 2, "sse": sse})
        opt.zero_grad()
        loss.backward()
        opt.step()
        lams.append(logs["lambda"])
        cons.append(logs["constraint"])
    peak = max(range(len(lams)), key=lams.__getitem__)
    assert all(b >= a for a, b in zip(lams[:peak], lams[1:peak + 1]))          # rises while violated
    assert all(c > 0 for c in cons[:peak])
    assert lams[peak] > 2.5 and cons[peak] < 0 < cons[peak - 5]                 # turns once the MA goes negative
    assert lams[peak + 50] < lams[peak]                                          # falls once satisfied
    assert theta.item() == pytest.approx(2.0, abs=0.02) and lams[-1] == pytest.approx(2.0, abs=0.05)


def test_geco_iwae_loss_value_and_gradient():
    torch.manual_seed(0)
    k, B, lam = 4, 3, 2.5
    log_px = torch.randn(k, B, dtype=D64, requires_grad=True)
    rest = torch.randn(k, B, dtype=D64)
    log_w = log_px + rest
    obj = GECOIWAE(k=k, constraint="nll", kappa=2.0, lambda_init=lam, lambda_lr=0.0)
    obj.train()
    loss, logs = obj({"log_w": log_w, "log_px": log_px, "kl": torch.zeros(B, dtype=D64)})
    w_tilde = torch.softmax(log_w.detach(), 0)
    R = -(w_tilde * log_px.detach()).sum(0)
    expected = -iwae_log_mean_exp(log_w.detach()).mean() + (lam - 1) * (R - 2.0).mean()
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    # d(-L_k)/d log_px_i = -w~_i / B ; d((lam-1) R)/d log_px_i = -(lam-1) w~_i / B
    torch.testing.assert_close(log_px.grad, -lam * w_tilde / B)
    # lambda = 1 recovers plain IWAE
    obj1 = GECOIWAE(k=k, constraint="nll", kappa=2.0, lambda_init=1.0)
    loss1, _ = obj1({"log_w": log_w, "log_px": log_px, "kl": torch.zeros(B, dtype=D64)})
    loss_iwae, _ = IWAE(k=k)({"log_w": log_w, "log_px": log_px, "kl": torch.zeros(B, dtype=D64)})
    torch.testing.assert_close(loss1, loss_iwae)


def test_geco_iwae_sse_constraint_is_self_normalised():
    log_w = torch.tensor([[0.0], [math.log(3.0)]])
    sse = torch.tensor([[10.0], [2.0]])
    obj = GECOIWAE(k=2, constraint="sse", kappa=1.0)
    obj.train()
    _, logs = obj({"log_w": log_w, "log_px": -sse, "kl": torch.zeros(1), "sse": sse})
    assert logs["constraint"] == pytest.approx(0.25 * 10 + 0.75 * 2 - 1.0)


def test_objective_config_errors():
    with pytest.raises(UnknownComponentError, match="objective.name: unknown value 'wake_sleep'.*elbo"):
        OBJECTIVES.build({"name": "wake_sleep"})
    with pytest.raises(ValueError, match="objective.constraint"):
        GECO(constraint="l1")
    with pytest.raises(ConfigError, match="objective.constraint.*'l1'.*'sse' or 'nll'"):
        small_model(name="geco", constraint="l1")
    assert OBJECTIVES.build({"name": "iwae"}).k == 5
    assert stop_gradient_ma(torch.tensor(1.0), torch.tensor(4.0)).item() == 4.0
