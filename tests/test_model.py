"""VAE assembly: every named model config builds, trains one step with finite gradients, and the public API
returns the documented shapes; config errors name their key."""
import copy
import math

import pytest
import torch

from vaebench.config import ConfigError
from vaebench.metrics.bounds import iwae_bound
from vaebench.vae import VAE, build_model

MLP = {"architecture": {"name": "mlp", "hidden_dims": [32, 16]}, "latent_dim": 8, "posterior": {"name": "diagonal"}}
CONV = {"architecture": {"name": "conv28"}, "latent_dim": 8, "posterior": {"name": "diagonal"}}
AR1 = {"posterior": {"name": "ar1"}}
GAUSS = lambda mode, **kw: {"name": f"gaussian_{mode}", **kw}
ELBO = {"name": "elbo"}

NAMED = {
    "vae_bernoulli": {**MLP, "likelihood": {"name": "bernoulli"}, "objective": ELBO},
    "vae_gaussian": {**MLP, "likelihood": GAUSS("fixed", sigma=1.0), "objective": ELBO},
    "beta_vae": {**MLP, "likelihood": GAUSS("fixed", sigma=1.0), "objective": {"name": "elbo", "beta": 0.01}},
    "sigma_vae": {**MLP, "likelihood": GAUSS("learned_shared"), "objective": ELBO},
    "sigma_vae_optimal": {**MLP, "likelihood": GAUSS("optimal_shared"), "objective": ELBO},
    "sigma_vae_per_image": {**MLP, "likelihood": GAUSS("optimal_per_image"), "objective": ELBO},
    "sigma_vae_per_pixel": {**MLP, "likelihood": GAUSS("per_pixel"), "objective": ELBO},
    "vae_categorical": {**CONV, "likelihood": {"name": "categorical"}, "objective": ELBO},
    "rho_vae": {**MLP, **AR1, "likelihood": {"name": "bernoulli"}, "objective": ELBO},
    "rho_sigma_vae": {**CONV, **AR1, "likelihood": GAUSS("optimal_shared"), "objective": ELBO},
    "geco": {**MLP, "likelihood": GAUSS("optimal_shared"),
             "objective": {"name": "geco", "constraint": "sse", "kappa": 4.0}},
    "iwae": {**MLP, "likelihood": {"name": "bernoulli"}, "objective": {"name": "iwae", "k": 5}},
    "geco_iwae": {**MLP, "likelihood": GAUSS("fixed", sigma=0.5),
                  "objective": {"name": "geco_iwae", "k": 5, "constraint": "nll", "kappa": 10.0}},
    "info_vae": {**MLP, "likelihood": {"name": "bernoulli"}, "objective": {"name": "info_vae", "lambda": 100.0}},
    "rho_info_vae": {**MLP, **AR1, "likelihood": GAUSS("optimal_shared"),
                     "objective": {"name": "info_vae", "alpha": 0.5, "kernel": "rbf"}},
}
SHAPE = (1, 28, 28)


def uint8_batch(B=4, shape=SHAPE, seed=0):
    return torch.randint(0, 256, (B, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_config_smoke(name):
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(NAMED[name]), SHAPE)
    assert isinstance(model, VAE) and model.latent_dim == 8 and model.image_shape == SHAPE
    x = model.preprocess(uint8_batch(), generator=torch.Generator().manual_seed(1))
    assert x.shape == (4, *SHAPE)
    model.train()
    loss, logs = model.training_loss(x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"loss", "elbo", "recon", "kl"} <= set(logs) and all(
        isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype == torch.float64 and not v.requires_grad
        for v in logs.values())     # device tensors: a training step never waits for the device
    assert logs["elbo"] == pytest.approx(-(logs["recon"] + logs["kl"]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.end_epoch()
    model.eval()
    with torch.no_grad():
        terms = model.elbo_terms(x)
        assert set(terms) == {"elbo", "recon", "kl"} and all(v.shape == (4,) for v in terms.values())
        torch.testing.assert_close(terms["elbo"], -(terms["recon"] + terms["kl"]))
        assert (terms["kl"] >= 0).all()
        assert model.log_weights(x, 3).shape == (3, 4)
        assert iwae_bound(model, x, 6, chunk_size=4).shape == (4,)
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    r = model.reconstruct(x)
    for img, n in ((s, 5), (r, 4)):
        assert img.shape == (n, *SHAPE) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    scalars = model.tracked_scalars()
    assert all(isinstance(v, float) for v in scalars.values())
    if name.startswith("geco"):
        assert "lambda" in scalars
    if name in ("sigma_vae", "sigma_vae_optimal", "vae_gaussian"):
        assert {"log_sigma", "effective_beta"} <= set(scalars)


def test_data_spaces():
    spaces = {n: build_model(copy.deepcopy(NAMED[n]), SHAPE).likelihood.data_space
              for n in ("vae_bernoulli", "sigma_vae", "vae_categorical")}
    assert spaces == {"vae_bernoulli": "binarised", "sigma_vae": "dequantised", "vae_categorical": "discrete"}


def test_categorical_model_with_uniform_decoder_gives_exactly_8_bits_per_dim():
    model = build_model(copy.deepcopy(NAMED["vae_categorical"]), (3, 28, 28))
    last = model.decoder.net[-1]                     # conv28's last ConvTranspose2d
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
    x = model.preprocess(uint8_batch(B=2, shape=(3, 28, 28)))
    recon = model.elbo_terms(x)["recon"]
    D = 3 * 28 * 28
    torch.testing.assert_close(recon / (D * math.log(2)), torch.full((2,), 8.0), rtol=1e-6, atol=0)


def test_beta_and_effective_beta():
    m = build_model(copy.deepcopy(NAMED["beta_vae"]), SHAPE)
    assert m.tracked_scalars()["effective_beta"] == pytest.approx(2 * 1.0 * 0.01)
    x = m.preprocess(uint8_batch())
    torch.manual_seed(3)
    loss, logs = m.training_loss(x)
    assert loss.item() == pytest.approx(float(logs["recon"] + 0.01 * logs["kl"]), rel=1e-5)


def test_optimal_sigma_eval_uses_frozen_training_mse_and_state_dict_roundtrip():
    cfg = copy.deepcopy(NAMED["sigma_vae_optimal"])
    model = build_model(cfg, SHAPE)
    x = model.preprocess(uint8_batch())
    model.train()
    model.training_loss(x)
    model.end_epoch()
    frozen = model.likelihood.eval_mse.item()
    assert frozen > 0
    clone = build_model(cfg, SHAPE)
    clone.load_state_dict(model.state_dict())
    assert clone.likelihood.eval_mse.item() == frozen
    model.eval(), clone.eval()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(model.elbo_terms(x, generator=g1)["recon"], clone.elbo_terms(x, generator=g2)["recon"])
    # elbo_terms in eval mode does not touch the running statistics
    model.elbo_terms(x)
    assert model.likelihood.element_count.item() == 0


def test_geco_state_saved_and_updated_only_in_training():
    cfg = copy.deepcopy(NAMED["geco"])
    model = build_model(cfg, SHAPE)
    x = model.preprocess(uint8_batch())
    model.eval()
    model.training_loss(x)
    assert model.tracked_scalars()["lambda"] == 1.0
    model.train()
    _, logs = model.training_loss(x)
    assert logs["constraint"] > 0 and model.tracked_scalars()["lambda"] > 1.0    # untrained: SSE >> kappa^2
    clone = build_model(cfg, SHAPE)
    clone.load_state_dict(model.state_dict())
    for key in ("lambda", "constraint"):
        assert clone.tracked_scalars()[key] == model.tracked_scalars()[key]


def test_rho_vae_log_weights_use_ar1_density():
    model = build_model(copy.deepcopy(NAMED["rho_vae"]), SHAPE)
    x = model.preprocess(uint8_batch(), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    lw = model.log_weights(x, 2, generator=g)
    q = model.encode(x)
    z = q.rsample(2, generator=torch.Generator().manual_seed(1))
    cov = q.covariance().double()
    ref_q = torch.distributions.MultivariateNormal(q.mean.double(), covariance_matrix=cov).log_prob(z.double())
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
    log_px = model.likelihood.log_prob(x, model.decode(z)).double()
    torch.testing.assert_close(lw.double(), log_px + log_pz - ref_q, atol=1e-3, rtol=1e-5)


def test_preprocess_reproducible_and_on_input_device():
    model = build_model(copy.deepcopy(NAMED["sigma_vae"]), SHAPE)
    xb = uint8_batch()
    a = model.preprocess(xb, generator=torch.Generator().manual_seed(7))
    b = model.preprocess(xb, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.device == xb.device and a.dtype == torch.float32


@pytest.mark.parametrize("patch, key, allowed", [
    ({"architecture": {"name": "resnet"}}, "architecture.name", "'conv28', 'iwae_mlp2', 'mlp'"),
    ({"posterior": {"name": "flow"}}, "posterior.name", "'ar1', 'diagonal'"),
    ({"likelihood": {"name": "laplace"}}, "likelihood.name", "'bernoulli'"),
    ({"likelihood": {"name": "gaussian_fixed", "sigma": -1.0}}, "likelihood.sigma", "greater than 0"),
    ({"objective": {"name": "vr"}}, "objective.name", "'elbo'"),
    ({"objective": {"name": "geco", "constraint": "ssim"}}, "objective.constraint", "'sse' or 'nll'"),
    ({"objective": {"name": "elbo", "k": 3}}, "objective.k", "allowed: name, beta"),
])
def test_unknown_values_raise_naming_the_key(patch, key, allowed):
    cfg = {**copy.deepcopy(NAMED["vae_gaussian"]), **patch}
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        build_model(cfg, SHAPE)
    assert allowed in str(err.value)


def test_conv28_requires_28x28():
    with pytest.raises(ValueError, match="architecture"):
        build_model(copy.deepcopy(NAMED["vae_categorical"]), (3, 32, 32))
    cfg = {**copy.deepcopy(NAMED["vae_gaussian"]), "architecture": {"name": "mlp", "hidden_dims": [8]}}
    assert build_model(cfg, (3, 32, 32)).sample(2).shape == (2, 3, 32, 32)


def test_calibrate_freezes_the_mse_of_the_final_weights_on_the_given_images():
    """After training, the optimal sigma used at test time is 1/2 log MSE of the final model's reconstructions (one
    z ~ q(z|x) each) over the training images, computed independently here; not the average of the last epoch's
    batches, which mixes earlier weights."""
    cfg = copy.deepcopy(NAMED["sigma_vae_optimal"])
    model = build_model(cfg, SHAPE)
    x_u8 = uint8_batch()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss, _ = model.training_loss(model.preprocess(x_u8))
        opt.zero_grad(), loss.backward(), opt.step()
    model.end_epoch()
    epoch_mse = model.likelihood.eval_mse.item()
    model.calibrate(x_u8, batch_size=3, generator=torch.Generator().manual_seed(5))
    assert model.training
    g = torch.Generator().manual_seed(5)
    model.eval()
    sq = []
    with torch.no_grad():
        for i in range(0, len(x_u8), 3):
            x = model.preprocess(x_u8[i: i + 3], generator=g)
            z = model.encode(x).rsample(None, generator=g)
            sq.append((x - model.likelihood.mean(model.decode(z))).pow(2).double().flatten())
    ref = torch.cat(sq).mean().item()
    assert model.likelihood.eval_mse.item() == pytest.approx(ref, rel=1e-9)
    assert model.likelihood.eval_mse.item() != pytest.approx(epoch_mse, rel=1e-3)
    from vaebench.vae.functional import softclip

    expected = softclip(torch.tensor(0.5 * math.log(ref), dtype=torch.float64), model.likelihood.log_sigma_min).item()
    assert model.tracked_scalars()["log_sigma"] == pytest.approx(expected, rel=1e-6)
