"""The sigma-VAE Table 2 decoders (Rybkin et al. 2021) added after the Gaussian and categorical ones: Student-t,
discretised logistic mixture and bitwise categorical. Each log-likelihood against an independent reference
(torch.distributions, or the mass of every 8-bit value computed densely here), the discrete masses summing to 1
over the 256 values (also for extreme parameters), means equal to the expectation under that mass, draws from
the right distribution, each catalogue model through the real model's evaluation path on a random batch, and
each trained for a short budget on real MNIST through the CLI and evaluated (methods.md Section 9)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.distributions import StudentT as TorchStudentT

from conftest import REPO, tiny_params
from vaebench import paths
from vaebench.config import load_catalogue
from vaebench.metrics.bounds import bits_per_dim, per_image_estimates
from vaebench.registry import LIKELIHOODS
from vaebench.vae import build_model
from vaebench.vae.functional import log_mean_exp, softclip
from vaebench.vae.likelihoods.bitwise import BitwiseCategorical
from vaebench.vae.likelihoods.gaussian import GaussianFixed
from vaebench.vae.likelihoods.logistic_mixture import LogisticMixture
from vaebench.vae.likelihoods.student_t import StudentT, standard_t, student_t_log_density

D64 = torch.float64
NEW_MODELS = ["vae_student_t", "vae_logistic_mixture", "vae_bitwise"]
# what the data space adds to -log p for a bound on the 8-bit NLL, written out (not read from the classes)
OFFSET_PER_DIM = {"binarised": 0.0, "discrete": 0.0, "dequantised": math.log(256.0)}
LEVELS = torch.arange(256)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=D64)


def inv_softplus(y):
    y = torch.as_tensor(y, dtype=D64)
    return y + torch.log(-torch.expm1(-y))


# ------------------------------------------------------------------------------------------------ Student-t

def test_student_t_shared_dof_matches_torch_distributions_with_sample_dim():
    lik = StudentT(dof="shared")
    assert lik.out_channels == 2 and lik.data_space == "dequantised"
    with torch.no_grad():
        lik.raw_dof.fill_(0.7)
    x = torch.rand(4, 3, 5, 5, generator=gen(1), dtype=D64)
    out = randn(2, 4, 2 * 3, 5, 5, seed=2) * 2                       # S = (k, B) = (2, 4)
    g = out.view(2, 4, 2, 3, 5, 5)
    df = 2.0 + F.softplus(lik.raw_dof.detach().double())
    ref = TorchStudentT(df, torch.sigmoid(g[:, :, 0]), torch.exp(softclip(g[:, :, 1], -6.0))).log_prob(x)
    got = lik.log_prob(x, out)
    assert got.shape == (2, 4) and got.dtype == D64
    torch.testing.assert_close(got, ref.sum((-3, -2, -1)), rtol=1e-12, atol=1e-9)
    assert lik.tracked_scalars() == {"nu": pytest.approx(float(df))}
    lik.log_prob(x.float(), out.float()).sum().backward()
    assert lik.raw_dof.grad is not None and torch.isfinite(lik.raw_dof.grad)


def test_student_t_per_pixel_dof_matches_torch_distributions_with_sample_dim():
    lik = StudentT(dof="per_pixel", nu_min=0.5, log_sigma_min=-4.0)
    assert lik.out_channels == 3 and not list(lik.parameters())
    x = torch.rand(3, 2, 4, 4, generator=gen(3), dtype=D64)
    out = randn(5, 3, 3 * 2, 4, 4, seed=4) * 2
    g = out.view(5, 3, 3, 2, 4, 4)
    ref = TorchStudentT(0.5 + F.softplus(g[:, :, 2]), torch.sigmoid(g[:, :, 0]),
                        torch.exp(softclip(g[:, :, 1], -4.0))).log_prob(x)
    torch.testing.assert_close(lik.log_prob(x, out), ref.sum((-3, -2, -1)), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(lik.log_prob(x, out)[3], lik.log_prob(x, out[3]))
    assert lik.tracked_scalars() == {}


def _student_out(mu, s, nu, nu_min=1e-9):
    """Per-pixel-dof decoder output (1, 3, 1, 1) giving location mu, scale s, dof nu (log_sigma_min = -100)."""
    return torch.tensor([math.log(mu / (1 - mu)), math.log(s), float(inv_softplus(nu - nu_min))],
                        dtype=D64).view(1, 3, 1, 1)


@pytest.mark.parametrize("x, mu, s, nu, expected, abs_tol", [
    (0.3, 0.3, 1.0, 1.0, -math.log(math.pi), 1e-9),           # Cauchy at its centre: -log pi = -1.144730
    (0.6, 0.1, 0.1, 3.0, -3.165488, 1e-6),                    # St(0.5 | 0, 0.1, 3), shifted by 0.1
    (0.6, 0.1, 0.1, 1e6, -11.11621, 1e-5),                    # nearly Gaussian: N(0.5 | 0, 0.1^2) = -11.11635
])
def test_student_t_methods_vectors(x, mu, s, nu, expected, abs_tol):
    lik = StudentT(dof="per_pixel", nu_min=1e-9, log_sigma_min=-100.0)
    got = lik.log_prob(torch.tensor(x, dtype=D64).view(1, 1, 1, 1), _student_out(mu, s, nu))
    assert got.item() == pytest.approx(expected, abs=abs_tol)
    t = lambda v: torch.tensor(v, dtype=D64)  # noqa: E731
    assert student_t_log_density(t(x), t(mu), t(math.log(s)), t(nu)).item() == pytest.approx(expected, abs=abs_tol)


def test_student_t_scale_is_soft_clipped_and_data_space_is_the_gaussians():
    lik = StudentT(dof="shared", log_sigma_min=-6.0)
    x = torch.rand(2, 1, 4, 4, generator=gen(5), dtype=D64)
    out = randn(2, 2, 4, 4, seed=6)
    out[:, 1] = -1000.0                                             # the network asks for s -> 0
    mu, log_s, nu = lik.params(out)
    assert (log_s >= -6.0).all() and nu.shape == () and torch.isfinite(lik.log_prob(x, out)).all()
    torch.testing.assert_close(lik.mean(out), torch.sigmoid(out[:, :1]))
    assert lik.discrete_offset_nats(784) == pytest.approx(784 * math.log(256))
    u8 = torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8, generator=gen(7))
    torch.testing.assert_close(lik.preprocess(u8, gen(8)), GaussianFixed().preprocess(u8, gen(8)))
    with pytest.raises(ValueError, match="likelihood.dof"):
        StudentT(dof="pixel")
    with pytest.raises(ValueError, match="likelihood.nu_min"):
        StudentT(nu_min=0.0)


def _student_t_cdf_at_1(nu):
    """P(T <= 1) in closed form: Cauchy (nu = 1), nu = 3, and the normal limit."""
    if nu == 1:
        return 0.75
    if nu == 3:
        return 0.5 + (1 / (math.sqrt(3) * (4 / 3)) + math.atan(1 / math.sqrt(3))) / math.pi
    return 0.5 * (1 + math.erf(1 / math.sqrt(2)))


@pytest.mark.parametrize("nu", [1, 3, 1e6])
def test_student_t_draws_follow_the_distribution(nu):
    t = standard_t(torch.full((100_000,), float(nu), dtype=D64), gen(9))
    p = 2 * _student_t_cdf_at_1(nu) - 1                              # P(|T| < 1)
    assert (t.abs() < 1).double().mean().item() == pytest.approx(p, abs=0.006)
    assert abs(t.median().item()) < 0.02
    lik = StudentT(dof="per_pixel", nu_min=1e-9, log_sigma_min=-100.0)
    out = _student_out(0.5, 0.01, nu).expand(20_000, 3, 1, 1)
    d = lik.draw(out, gen(10))
    assert d.shape == (20_000, 1, 1, 1) and d.min() >= 0 and d.max() <= 1
    assert ((d - 0.5).abs() < 0.01).double().mean().item() == pytest.approx(p, abs=0.015)
    torch.testing.assert_close(d, lik.draw(out, gen(10)))             # reproducible from the generator


# ------------------------------------------------------------------------------------- logistic mixture

def dense_mixture_mass(logits, means, log_scales):
    """P(v) for v = 0..255 of one sub-pixel's K-logistic mixture, written out bin by bin: (256,) float64.
    x = v/127.5 - 1; bin [x - 1/255, x + 1/255]; v = 0 and v = 255 open-ended; log scales floored at -7."""
    pi = torch.softmax(logits.double(), 0)
    s = torch.exp(log_scales.double().clamp(min=-7.0))
    mass = torch.zeros(256, dtype=D64)
    for v in range(256):
        x = v / 127.5 - 1.0
        upper = torch.sigmoid((x + 1 / 255 - means) / s) if v < 255 else torch.ones_like(means)
        lower = torch.sigmoid((x - 1 / 255 - means) / s) if v > 0 else torch.zeros_like(means)
        mass[v] = (pi * (upper - lower)).sum()
    return mass


def mixture_out(logits, means, log_scales):
    """Decoder output (1, 3K, 1, 1) of one sub-pixel."""
    return torch.cat([torch.as_tensor(a, dtype=D64) for a in (logits, means, log_scales)]).view(1, -1, 1, 1)


def all_values_log_mass(lik, out):
    """log P(v) of the likelihood for v = 0..255 of a one-sub-pixel decoder output: (256,)."""
    return lik.log_prob(LEVELS.view(256, 1, 1, 1), out.expand(256, *out.shape[1:]))


def test_logistic_mixture_matches_the_dense_per_bin_mass_with_sample_dim():
    K = 4
    lik = LogisticMixture(n_mix=K)
    assert lik.out_channels == 12 and lik.data_space == "discrete" and not lik.supports_sse
    out = randn(3, 2, 3 * K * 2, 2, 3, seed=11)                      # S = (3, 2); C, H, W = 2, 2, 3
    g = out.view(3, 2, 3, K, 2, 2, 3)
    g[:, :, 1] = g[:, :, 1] * 0.6                                     # means around [-1, 1]
    g[:, :, 2] = -1.5 + 0.7 * g[:, :, 2]                              # log scales around -1.5
    x = torch.randint(0, 256, (2, 2, 2, 3), generator=gen(12))
    x[0, 0, 0, 0], x[1, 1, 1, 2] = 0, 255                             # both open edge bins
    ref = torch.zeros(3, 2, dtype=D64)
    for i in range(3):
        for b in range(2):
            for c in range(2):
                for h in range(2):
                    for w in range(3):
                        mass = dense_mixture_mass(*(g[i, b, part, :, c, h, w] for part in range(3)))
                        ref[i, b] += torch.log(mass[x[b, c, h, w]])
    got = lik.log_prob(x, out)
    assert got.shape == (3, 2)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-9)


EXTREME = [
    ([0.0], [0.0], [-7.0]),                                           # narrowest logistic, centred
    ([0.0], [0.3], [math.log(0.05)]),                                 # methods.md: 1 - 4e-15
    ([0.0], [1.0], [-7.0]), ([0.0], [-1.0], [-7.0]),                  # on the edge bins
    ([0.0], [1.5], [-7.0]), ([0.0], [-3.0], [-7.0]),                  # beyond the range
    ([0.0], [40.0], [-7.0]), ([0.0], [-1e4], [-3.0]),                 # far beyond it
    ([0.0], [0.0], [5.0]), ([0.0], [0.7], [12.0]),                    # very wide
    ([0.0], [0.0], [-30.0]),                                          # below the floor: floored at -7
    ([30.0, -30.0, 0.0], [0.2, -0.5, 0.9], [-7.0, 5.0, -2.0]),       # very peaked mixture weights
    ([-50.0, 50.0], [1.0 + 1 / 255, -1.0 - 1 / 255], [-7.0, -7.0]),  # on the bin edges
    ([0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [-7.0, 5.0, -7.0]),
]


@pytest.mark.parametrize("logits, means, log_scales", EXTREME)
def test_logistic_mixture_mass_over_256_values_is_one_and_finite(logits, means, log_scales):
    lik = LogisticMixture(n_mix=len(logits))
    out = mixture_out(logits, means, log_scales).requires_grad_(True)
    log_mass = all_values_log_mass(lik, out)
    assert not torch.isnan(log_mass).any() and (log_mass <= 1e-12).all()
    assert torch.logsumexp(log_mass, 0).exp().item() == pytest.approx(1.0, abs=1e-6)
    dense = dense_mixture_mass(torch.tensor(logits), torch.tensor(means, dtype=D64), torch.tensor(log_scales))
    ok = dense > 1e-8                                                 # where the dense difference is accurate
    torch.testing.assert_close(log_mass.detach()[ok], torch.log(dense[ok]), rtol=0, atol=1e-6)
    log_mass.sum().backward()
    assert torch.isfinite(out.grad).all()
    # mean: the exact expectation under the mass; draws: on the 256-level grid
    torch.testing.assert_close(lik.mean(out.detach()).squeeze(),
                               (torch.exp(log_mass.detach()) * LEVELS.double()).sum() / 255, rtol=0, atol=1e-9)


def test_logistic_mixture_mean_and_draws_follow_the_mass():
    K = 3
    lik = LogisticMixture(n_mix=K)
    out = randn(2, 3 * K, 1, 1, seed=13)
    out[:, K : 2 * K] *= 0.8
    out[:, 2 * K :] = -2.5 + 0.5 * out[:, 2 * K :]
    mass = torch.stack([dense_mixture_mass(o[:K, 0, 0], o[K : 2 * K, 0, 0], o[2 * K :, 0, 0]) for o in out])
    torch.testing.assert_close(lik.mean(out).view(2), (mass * LEVELS.double()).sum(1) / 255, rtol=0, atol=1e-10)
    d = lik.draw(out.repeat(20_000, 1, 1, 1), gen(14)).view(20_000, 2)
    assert torch.equal(d * 255, (d * 255).round()) and d.min() >= 0 and d.max() <= 1
    for j in range(2):
        freq = torch.bincount((d[:, j] * 255).round().long(), minlength=256).double() / 20_000
        assert 0.5 * (freq - mass[j]).abs().sum().item() < 0.06        # total variation, sampling noise ~0.03
    torch.testing.assert_close(d.mean(0), lik.mean(out).view(2), atol=0.005, rtol=0)
    with pytest.raises(ValueError, match="likelihood.n_mix"):
        LogisticMixture(n_mix=0)


# ------------------------------------------------------------------------------------------ bitwise

def dense_bitwise_log_mass(logits):
    """log P(v), v = 0..255, of 8 independent bits with ``logits`` (8,), most significant first, as the product of
    Bernoulli probabilities of the digits of format(v, '08b'): (256,) float64."""
    p1, p0 = torch.sigmoid(logits.double()), torch.sigmoid(-logits.double())
    return torch.stack([sum(torch.log(p1[b] if bit == "1" else p0[b]) for b, bit in enumerate(format(v, "08b")))
                        for v in range(256)])


def test_bitwise_uniform_logits_give_exactly_8_ln2():
    lik = BitwiseCategorical()
    x = torch.randint(0, 256, (2, 3, 5, 5), generator=gen(15))
    nll = -lik.log_prob(x, torch.zeros(2, 8 * 3, 5, 5, dtype=D64))
    torch.testing.assert_close(nll, torch.full((2,), 75 * 8 * math.log(2), dtype=D64), rtol=1e-15, atol=0)
    assert 8 * math.log(2) == pytest.approx(5.545177, abs=1e-6)
    torch.testing.assert_close(lik.mean(torch.zeros(1, 8, 2, 2)), torch.full((1, 1, 2, 2), 127.5 / 255))


@pytest.mark.parametrize("scale", [1.0, 4.0, 30.0])
def test_bitwise_matches_dense_bernoulli_product_and_sums_to_one(scale):
    lik = BitwiseCategorical()
    logits = randn(8, seed=16) * scale
    if scale == 30.0:
        logits = 30.0 * torch.sign(logits)                            # every bit at +-30
    out = logits.view(1, 8, 1, 1)
    log_mass = all_values_log_mass(lik, out)
    torch.testing.assert_close(log_mass, dense_bitwise_log_mass(logits), rtol=1e-12, atol=1e-12)
    assert torch.logsumexp(log_mass, 0).exp().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(lik.mean(out).squeeze(), (log_mass.exp() * LEVELS.double()).sum() / 255,
                               rtol=0, atol=1e-12)


def test_bitwise_layout_sample_dim_and_draws():
    lik = BitwiseCategorical()
    assert lik.out_channels == 8 and lik.data_space == "discrete" and not lik.supports_sse
    x = torch.randint(0, 256, (3, 2, 2, 2), generator=gen(17))
    out = randn(4, 3, 8 * 2, 2, 2, seed=18) * 3
    logits = out.view(4, 3, 8, 2, 2, 2)
    ref = torch.zeros(4, 3, dtype=D64)
    for i in range(4):
        for b in range(3):
            for c, h, w in np.ndindex(2, 2, 2):
                ref[i, b] += dense_bitwise_log_mass(logits[i, b, :, c, h, w])[x[b, c, h, w]]
    torch.testing.assert_close(lik.log_prob(x, out), ref, rtol=1e-12, atol=1e-9)
    one = out[:1, :1, :8, :1, :1].reshape(1, 8, 1, 1)
    d = lik.draw(one.expand(20_000, 8, 1, 1), gen(19)).flatten()
    assert torch.equal(d * 255, (d * 255).round()) and d.min() >= 0 and d.max() <= 1
    freq = torch.bincount((d * 255).round().long(), minlength=256).double() / 20_000
    assert 0.5 * (freq - all_values_log_mass(lik, one).exp()).abs().sum().item() < 0.06
    u8 = torch.randint(0, 256, (2, 1, 3, 3), dtype=torch.uint8, generator=gen(20))
    for cls in (BitwiseCategorical, LogisticMixture):
        c = cls().preprocess(u8)
        assert c.dtype == torch.long and torch.equal(c, u8.long()) and cls().discrete_offset_nats(9) == 0.0
        torch.testing.assert_close(cls().to_unit(c), u8.float() / 255)


# --------------------------------------------------------------------------------- through the model

def test_metadata_of_the_new_likelihoods():
    meta = {n: LIKELIHOODS.get(n).metadata() for n in ("student_t", "logistic_mixture", "bitwise_categorical")}
    assert {n: m["data_space"] for n, m in meta.items()} == {
        "student_t": "dequantised", "logistic_mixture": "discrete", "bitwise_categorical": "discrete"}
    assert all(m["valid_density"] and m["likelihood_description"] for m in meta.values())
    catalogue = load_catalogue(REPO / "catalogue.yaml")
    assert {m: catalogue[m]["likelihood"]["name"] for m in NEW_MODELS} == {
        "vae_student_t": "student_t", "vae_logistic_mixture": "logistic_mixture", "vae_bitwise": "bitwise_categorical"}


@pytest.mark.parametrize("name", NEW_MODELS)
def test_catalogue_model_flows_through_training_and_evaluation(name):
    """The catalogue entry built as the pipeline builds it, on a random uint8 MNIST-shaped batch: one training
    step with finite gradients; per-image ELBO and L_k from the evaluation's ``per_image_estimates``; L_k >= the
    mean log weight of its own samples (exactly); bits/dim by the data space's convention."""
    torch.manual_seed(0)
    entry = copy.deepcopy(load_catalogue(REPO / "catalogue.yaml")[name])
    model = build_model(entry, (1, 28, 28))
    u8 = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=gen(21))
    x = model.preprocess(u8, generator=gen(22))
    model.train()
    loss, _ = model.training_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.end_epoch()
    model.eval()
    est = per_image_estimates(model, x, u8, k=20, memory_mb=64.0, generator=gen(23))
    assert all(torch.isfinite(v).all() for v in est.values())
    torch.testing.assert_close(est["elbo"], -(est["recon"] + est["kl"]))
    assert ("sse" in est) == model.likelihood.supports_sse
    d = est["L_k"] - est["elbo"]
    assert d.mean() > -3 * d.std() / math.sqrt(len(d))
    with torch.no_grad():
        log_w = model.log_weights(x, 20, generator=gen(24))
    assert (log_mean_exp(log_w) >= log_w.mean(0) - 1e-9).all()       # same samples: Jensen, exactly
    D = 784
    nll = -float(est["L_k"].mean())
    bpd = bits_per_dim(nll, model.likelihood.discrete_offset_nats(D), D)
    assert bpd == pytest.approx((nll + D * OFFSET_PER_DIM[model.likelihood.data_space]) / (D * math.log(2)))
    if model.likelihood.data_space == "discrete":
        assert (est["recon"] > 0).all()                               # -log P(x|z) >= 0 for a probability
    images = (model.sample(3, generator=gen(25)), model.sample(3, generator=gen(25), draw=True), model.reconstruct(x))
    for img in images:
        assert img is not None and torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


# ----------------------------------------------------------------------------- real MNIST, through the CLI

@pytest.fixture(scope="module")
def cli_workspace(tmp_path_factory, mirror):
    """A workspace with the three new models: real MNIST prepared, FID classifier and reference, all through
    ``python -m vaebench`` (its ``main``, in-process), MLflow off."""
    from vaebench.cli import main

    tmp = tmp_path_factory.mktemp("table2_cli")
    params = tiny_params(models=NEW_MODELS)
    params["datasets"]["mnist"].update({"max_train": 200, "max_validation": 100, "max_test": 100})
    params["evaluate"].update({"n_images": 30, "iwae_k": 10, "latent_n": 30, "fid_n": 20, "fid_seeds": 1,
                               "grid_n": 4, "batch_size": 100})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp / "catalogue.yaml").write_text((REPO / "catalogue.yaml").read_text())
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    mp.setenv("VAEBENCH_MLFLOW", "0")
    mp.setattr("vaebench.cli.return_freed_memory", lambda *a, **k: False)   # no trim thread per in-process call
    try:
        assert main(["prepare", "--dataset", "mnist", "--mirror", str(mirror)]) == 0
        for stage in ("classifier", "fid_reference"):
            assert main([stage, "--dataset", "mnist"]) == 0
        yield tmp, params, main
    finally:
        mp.undo()


@pytest.mark.mirror("mnist")
@pytest.mark.parametrize("model", NEW_MODELS)
def test_cli_trains_and_evaluates_each_new_decoder_on_mnist(cli_workspace, model, monkeypatch):
    tmp, params, main = cli_workspace
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("VAEBENCH_MLFLOW", "0")
    cell = ["--dataset", "mnist", "--model", model, "--seed", "0"]
    assert main(["train", *cell]) == 0
    assert main(["evaluate", *cell]) == 0
    out = tmp / paths.cell_paths(params["study"], "mnist", model, 0)["metrics"].parent
    m = json.loads((out / "metrics.json").read_text())
    with np.load(out / "per_image.npz") as z:
        a = {k: z[k] for k in z.files}
    lik = LIKELIHOODS.get(m["likelihood"])
    assert m["model"] == model and m["data_space"] == lik.data_space and m["likelihood_family"] == lik.family
    assert all(np.isfinite(a[k]).all() for k in ("elbo", "L_k", "L_k10", "kl"))
    assert m["test_elbo_nats"] == pytest.approx(float(a["elbo"].mean()), rel=1e-12)
    assert m["test_nll_iwae_nats"] == pytest.approx(-float(a["L_k"].mean()), rel=1e-12)
    d = a["L_k"] - a["elbo"]                                          # paired, the same 30 images
    assert d.mean() > -3 * d.std(ddof=1) / math.sqrt(len(d))
    D = 28 * 28
    assert m["bits_per_dim"] == pytest.approx(
        (m["test_nll_iwae_nats"] + D * OFFSET_PER_DIM[m["data_space"]]) / (D * math.log(2)), rel=1e-12)
    if m["data_space"] == "discrete":
        assert m["bits_per_dim"] > 0 and m.get("test_sse") is None
    assert m["fid_classifier"] > 0 and m["fid_classifier_draws"] > 0
