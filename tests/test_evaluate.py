"""The evaluate stage end to end on real MNIST (a subset from the mirror), for EVERY model of the catalogue:
each is trained for one short epoch and evaluated in-process, and the relations between its metrics that
hold whatever the training are asserted (ELBO <= L_k on the same images, E[L_{k/10}] <= L_k, KL >= 0,
bits/dim = its formula, the latent analysis consistent with the KL, the pipeline's FID equal to an
independent computation on the same images). Also: known-value checks of bits/dim and of GECO's moving
average, and the determinism of one cell run twice through the CLI."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import BIN, REPO, at_mnist_size, env, image_models, in_process_study, make_workspace, run, tiny_params
from vaebench import paths
from vaebench.config import load_catalogue, validate_study
from vaebench.metrics.bounds import bits_per_dim
from vaebench.registry import ARCHITECTURES, LIKELIHOODS

CATALOGUE_MODELS = image_models(load_catalogue(REPO / "catalogue.yaml"))
# What the data space adds to -log p to bound the NLL of the 8-bit image: written out here, not read from the
# likelihood classes, so a wrong offset in the code fails the formula check below.
OFFSET_PER_DIM = {"binarised": 0.0, "discrete": 0.0, "dequantised": math.log(256.0)}
TIMING_FIELDS = {"train_seconds", "eval_seconds", "mlflow_run_id"}


def all_models_params() -> dict:
    params = tiny_params(models=at_mnist_size(CATALOGUE_MODELS))
    params["datasets"]["mnist"].update({"max_train": 600, "max_validation": 200, "max_test": 200})
    params["evaluate"].update({"n_images": 40, "iwae_k": 30, "latent_n": 40, "fid_n": 60, "fid_seeds": 2,
                               "grid_n": 4, "batch_size": 100})
    return params


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mirror):
    """Every catalogue model trained (one epoch on 600 images) and evaluated, in-process, in a workspace."""
    from vaebench.stages import classifier, evaluate, fid_reference, prepare, train

    tmp = tmp_path_factory.mktemp("eval_all")
    with in_process_study(tmp, all_models_params()) as study:
        prepare.run(study, "mnist", mirror=str(mirror))
        classifier.run(study, "mnist")
        fid_reference.run(study, "mnist")
        out = {}
        for m in CATALOGUE_MODELS:
            train.run(study, "mnist", m, 0)
            evaluate.run(study, "mnist", m, 0)
            cell = tmp / paths.cell_paths(study.name, "mnist", m, 0)["metrics"].parent
            with np.load(cell / "per_image.npz") as z:
                arrays = {k: z[k] for k in z.files}
            out[m] = (json.loads((cell / "metrics.json").read_text()), arrays)
    return tmp, study, out


@pytest.mark.parametrize("model", CATALOGUE_MODELS)
def test_metric_relations_hold_for_every_model(evaluated, model):
    _, study, out = evaluated
    m, a = out[model]
    n = study.config.evaluate.n_images
    assert m["n_images"] == n and all(len(v) == n for v in a.values())
    # the same images for every estimate: a fixed subset of the test split, shared by every model
    assert np.array_equal(a["index"], out[CATALOGUE_MODELS[0]][1]["index"])
    se = lambda v: v.std(ddof=1) / math.sqrt(len(v))  # noqa: E731
    # KL in closed form is >= 0 per image; ELBO = -(recon + KL) per image
    # a hierarchical model's KL of the lower layers is a one-path estimate (log q - log p at the sampled path)
    exact_kl = not hasattr(ARCHITECTURES.get(m["architecture"]), "build_vae")
    assert (a["kl"] >= -1e-6).all() or not exact_kl
    np.testing.assert_allclose(a["elbo"], -(a["recon"] + a["kl"]), rtol=1e-9, atol=1e-6)
    # E[ELBO] <= E[L_1] <= E[L_{k/10}] <= E[L_k] on the same images (Burda et al. 2016, Theorem 1)
    for lower, upper in (("elbo", "L_k"), ("L_k10", "L_k")):
        d = a[upper] - a[lower]
        assert d.mean() > -3 * se(d) - 1e-9, (model, lower, upper, d.mean(), se(d))
    assert m["lk_gap_nats"] == pytest.approx(float((a["L_k"] - a["L_k10"]).mean()), rel=1e-9, abs=1e-9)
    assert m["lk_converged"] == (m["lk_gap_nats"] <= m["lk_tolerance_nats"])
    # reported means are the means of the saved per-image values
    assert m["test_nll_iwae_nats"] == pytest.approx(-float(a["L_k"].mean()), rel=1e-12)
    assert m["test_elbo_nats"] == pytest.approx(float(a["elbo"].mean()), rel=1e-12)
    assert m["test_nll_iwae_se"] == pytest.approx(se(a["L_k"]), rel=1e-9)
    # bits/dim = (NLL + offset) / (D ln 2), offset by data space
    D = 28 * 28
    expected = (m["test_nll_iwae_nats"] + D * OFFSET_PER_DIM[m["data_space"]]) / (D * math.log(2))
    assert m["bits_per_dim"] == pytest.approx(expected, rel=1e-12)
    # latent analysis on the same images: the rate is the ELBO's KL term; 0 <= MI <= log N (Monte Carlo slack)
    kl = a["kl"][: m["latent_n"]]
    assert m["latent_rate_nats"] == pytest.approx(float(kl.mean()), rel=1e-9 if exact_kl else 0,
                                                  abs=1e-9 if exact_kl else 5 * se(kl) + 1e-9)
    assert -0.5 < m["latent_mutual_info_nats"] <= m["latent_log_n_nats"] + 0.5
    assert 0 <= m["active_units"] <= m["latent_dim"]
    assert m["fid_classifier"] > 0 and m["fid_floor"] >= 0
    assert m["fid_floor"] < m["fid_blurred_reference"] < m["fid_noise_reference"]     # the scale of the features
    if LIKELIHOODS.get(m["likelihood"]).supports_sse:
        assert m["test_sse"] == pytest.approx(float(a["sse"].mean()), rel=1e-12) and (a["sse"] >= 0).all()
        assert m["test_mse"] == pytest.approx(m["test_sse"] / D, rel=1e-12)
    assert len(m["fid_classifier_per_seed"]) == study.config.evaluate.fid_seeds
    assert m["fid_classifier"] == pytest.approx(float(np.mean(m["fid_classifier_per_seed"])), rel=1e-12)
    if m["likelihood_family"] == "gaussian":
        # the discretised column: a probability of each 8-bit bin, so -log P >= 0 per image
        assert (a["L_k_discretised"] <= 1e-6).all() and m["test_nll_iwae_discretised_nats"] > 0
        d = a["L_k_discretised"] - a["elbo_discretised"]
        assert d.mean() > -3 * se(d)
        assert m["bits_per_dim_discretised"] == pytest.approx(
            m["test_nll_iwae_discretised_nats"] / (D * math.log(2)), rel=1e-12)
    else:
        assert "test_nll_iwae_discretised_nats" not in m
    if m["objective"] == "geco":
        assert m["effective_beta"] == pytest.approx(1.0 / m["lambda"], rel=1e-9)
    if m["objective"] == "geco_iwae":
        assert m["effective_beta"] is None
    if m["sigma_mode"] == "optimal_per_image":
        assert m["valid_density"] is False and m["fid_classifier_draws"] is None
    else:
        assert m["fid_classifier_draws"] > 0


def test_pipeline_fid_equals_an_independent_computation(evaluated):
    """The FID in metrics.json (our Frechet distance of the fid_reference statistics) equals torchmetrics'
    FrechetInceptionDistance run on the same real images and the same regenerated samples."""
    from vaebench.checkpoint import load_checkpoint
    from vaebench.data.prepared import load_prepared
    from vaebench.metrics.classifier import load_classifier
    from vaebench.metrics.fid import fid_classifier
    from vaebench.seeds import stream_seed
    from vaebench.vae.sampling import prior_samples

    tmp, study, out = evaluated
    ecfg = study.config.evaluate
    clf, _ = load_classifier(tmp / paths.CLASSIFIER.format(study=study.name, dataset="mnist"))
    x_test = load_prepared(tmp / paths.PREPARED.format(study=study.name, dataset="mnist"))["x_test"]
    for name in ("vae_bernoulli", "sigma_vae"):
        model, _ = load_checkpoint(tmp / paths.CHECKPOINT.format(study=study.name, dataset="mnist", model=name, seed=0),
                                   "cpu")
        for s, reported in enumerate(out[name][0]["fid_classifier_per_seed"]):
            samples = prior_samples(model, ecfg.fid_n, stream_seed(ecfg.seed, "fid_samples", s), ecfg.batch_size)
            assert reported == pytest.approx(fid_classifier(clf, x_test, samples), rel=1e-6)
        draws = prior_samples(model, ecfg.fid_n, stream_seed(ecfg.seed, "fid_draws"), ecfg.batch_size, draw=True)
        assert out[name][0]["fid_classifier_draws"] == pytest.approx(fid_classifier(clf, x_test, draws), rel=1e-6)
    # the reference sets: held-out images, the same blurred, uniform noise, scored the same way
    from vaebench.metrics.references import blurred, fixed_subset, uniform_noise_images

    data = load_prepared(tmp / paths.PREPARED.format(study=study.name, dataset="mnist"))
    held_out = data["x_val"][fixed_subset(len(data["x_val"]), ecfg.fid_n, stream_seed(ecfg.seed, "fid_floor_subset"))]
    m = out["vae_bernoulli"][0]
    assert m["fid_floor"] == pytest.approx(fid_classifier(clf, x_test, held_out), rel=1e-6)
    assert m["fid_blurred_reference"] == pytest.approx(fid_classifier(clf, x_test, blurred(held_out)), rel=1e-6)
    noise = uniform_noise_images(held_out.shape, stream_seed(ecfg.seed, "fid_noise"))
    assert m["fid_noise_reference"] == pytest.approx(fid_classifier(clf, x_test, noise), rel=1e-6)


def test_blurred_reference_is_a_5x5_box_mean():
    """blurred() against a dense numpy computation: each pixel the mean of its 5x5 neighbourhood, edges reflected
    (numpy's 'symmetric' padding = scipy's 'reflect'), rounded half to even."""
    from vaebench.metrics.references import blurred

    x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 7, 6), dtype=np.uint8)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="symmetric")
    dense = np.zeros(x.shape)
    for i in range(7):
        for j in range(6):
            dense[:, :, i, j] = padded[:, :, i:i + 5, j:j + 5].mean(axis=(2, 3))
    np.testing.assert_array_equal(blurred(x), np.rint(dense).astype(np.uint8))


@pytest.mark.parametrize("n, c, nrow", [(5, 1, 3), (7, 3, 3), (16, 1, 4), (1, 3, 1), (2, 1, 5)])
def test_grid_png_equals_torchvision(tmp_path, n, c, nrow):
    """The stages lay out and write their grids themselves (importing torchvision costs ~1.7 s per job): the
    layout equals torchvision's make_grid, and the PNG's pixels make_grid + save_image of the same images."""
    from PIL import Image
    from torchvision.utils import make_grid, save_image

    from vaebench.grids import grid_image, save_grid_png

    images = torch.rand(n, c, 9, 7, generator=torch.Generator().manual_seed(n))
    assert torch.equal(grid_image(images, nrow), make_grid(images, nrow=nrow, padding=2))
    save_grid_png(images, nrow, tmp_path / "ours.png")
    save_image(make_grid(images, nrow=nrow, padding=2), tmp_path / "torchvision.png")
    ours, ref = (np.asarray(Image.open(tmp_path / f)) for f in ("ours.png", "torchvision.png"))
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_interleave_rows_puts_each_groups_row_in_turn():
    """Rows of per_row images, group by group: 7 images of two groups at 3 per row give rows a0-a2, b0-b2, a3-a5,
    b3-b5, a6, b6 (a short last row each); a video's frames flattened with per_row = frames give one row per video
    and group."""
    from vaebench.grids import interleave_rows

    a, b = torch.arange(7.0).view(7, 1, 1, 1), 100 + torch.arange(7.0).view(7, 1, 1, 1)
    got = interleave_rows([a, b], 3).flatten().tolist()
    assert got == [0, 1, 2, 100, 101, 102, 3, 4, 5, 103, 104, 105, 6, 106]
    videos, recons = torch.arange(8.0).view(2, 4, 1, 1, 1), -torch.arange(8.0).view(2, 4, 1, 1, 1)
    rows = interleave_rows([videos.flatten(0, 1), recons.flatten(0, 1)], 4).view(4, 4)
    assert torch.equal(rows, torch.stack([videos[0], recons[0], videos[1], recons[1]]).view(4, 4))
    with pytest.raises(ValueError, match="per_row 0"):
        interleave_rows([a, b], 0)
    with pytest.raises(ValueError, match=r"\(7, 1, 1, 1\), \(6, 1, 1, 1\)"):
        interleave_rows([a, b[:6]], 3)


def test_bits_per_dim_known_values():
    D = 784
    # dequantised: NLL + D ln 256 nats -> +8 bits/dim exactly
    assert bits_per_dim(0.0, D * math.log(256), D) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(543.4, D * math.log(256), D) == pytest.approx(543.4 / (D * math.log(2)) + 8.0, rel=1e-14)
    assert bits_per_dim(100.0, 0.0, 784) == pytest.approx(0.1840172246, rel=1e-9)   # 100 / (784 ln 2)
    with pytest.raises(ValueError, match="dim"):
        bits_per_dim(1.0, 0.0, 0)


def test_likelihood_offsets_by_data_space():
    from vaebench.registry import ARCHITECTURES, LIKELIHOODS

    for name in LIKELIHOODS.names():
        cls = LIKELIHOODS.get(name)
        lik = LIKELIHOODS.build(cls.Config(name=name))
        assert lik.discrete_offset_nats(784) == pytest.approx(784 * OFFSET_PER_DIM[cls.data_space], rel=1e-14), name


def test_geco_moving_average_known_values():
    """C_ma <- alpha C_ma + (1 - alpha) C_hat with alpha = 0.9 (not 0.5, where swapping alpha and 1 - alpha
    would go unnoticed), and log lambda += lambda_lr * C_ma after each step."""
    from vaebench.vae.objectives.geco import GECO

    obj = GECO(constraint="sse", kappa=1.0, alpha=0.9, lambda_init=2.0, lambda_lr=0.01).train()
    kl = torch.zeros(2, dtype=torch.float64)
    log_lambda = math.log(2.0)
    expected_ma = None
    for sse in (5.0, 1.0, 3.0):                           # C_hat = sse - kappa^2 = 4, 0, 2
        c_hat = sse - 1.0
        expected_ma = c_hat if expected_ma is None else 0.9 * expected_ma + 0.1 * c_hat
        terms = {"log_px": torch.zeros(2, dtype=torch.float64), "kl": kl,
                 "sse": torch.full((2,), sse, dtype=torch.float64)}
        loss, _ = obj(terms)
        assert float(loss) == pytest.approx(math.exp(log_lambda) * expected_ma, rel=1e-12)   # lambda of this step
        log_lambda += 0.01 * expected_ma
        assert float(obj.c_ma) == pytest.approx(expected_ma, rel=1e-12)
        assert float(obj.log_lambda) == pytest.approx(log_lambda, rel=1e-12)
    assert expected_ma == pytest.approx(0.9 * (0.9 * 4.0 + 0.1 * 0.0) + 0.1 * 2.0)          # 3.44
    assert obj.effective_beta(None) == pytest.approx(1.0 / math.exp(log_lambda), rel=1e-12)


@pytest.mark.slow
@pytest.mark.pipeline
def test_same_cell_twice_gives_identical_metrics(tmp_path, mirror):
    """Same commit, params, seed and machine -> identical metrics.json and per-image values (CPU): one tiny
    cell trained and evaluated twice through the CLI, in two workspaces sharing the prepared data.

    Slow (about a minute): the default suite checks the same, on two whole studies run from scratch, in
    tests/test_faults.py (a recovered run against an uninterrupted one: every metrics.json and per-image value
    equal)."""
    params = tiny_params(models=["sigma_vae_optimal"])
    params["evaluate"].update({"fid_seeds": 1})
    first = make_workspace(tmp_path / "a", params)
    e = env(tmp_path, first)
    vb = [str(BIN / "python"), "-m", "vaebench"]
    for stage in ("prepare", "classifier", "fid_reference"):
        run(vb + [stage, "--dataset", "mnist", "--threads", "1"], first, env=e)
    second = make_workspace(tmp_path / "b", params)
    shutil.copytree(first / "data", second / "data")
    results = []
    for ws in (first, second):
        cell = ["--dataset", "mnist", "--model", "sigma_vae_optimal", "--seed", "0", "--threads", "1"]
        run(vb + ["train"] + cell, ws, env=env(tmp_path, ws))
        run(vb + ["evaluate"] + cell, ws, env=env(tmp_path, ws))
        d = ws / paths.cell_paths(params["study"], "mnist", "sigma_vae_optimal", 0)["metrics"].parent
        metrics = json.loads((d / "metrics.json").read_text())
        with np.load(d / "per_image.npz") as z:
            arrays = {k: z[k] for k in z.files}
        results.append(({k: v for k, v in metrics.items() if k not in TIMING_FIELDS}, arrays))
    assert results[0][0] == results[1][0]
    for k in results[0][1]:
        assert np.array_equal(results[0][1][k], results[1][1][k]), k


def test_inception_fid_whole_path_with_random_init_weights(tmp_path, mirror, inception_weights_file, monkeypatch):
    """A study with ``inception: required`` and a weights path (a random-init state_dict of the same
    architecture): fid_reference writes Inception statistics of the test split, evaluate an Inception FID of
    the samples equal to an independent computation (torchmetrics' accumulated statistics, our Frechet
    distance), with N next to it."""
    from vaebench.checkpoint import load_checkpoint
    from vaebench.data.prepared import load_prepared
    from vaebench.metrics.fid import frechet_distance
    from vaebench.stages import classifier, evaluate, fid_reference, prepare, train
    from vaebench.seeds import stream_seed
    from vaebench.vae.sampling import prior_samples

    params = tiny_params(models=["vae_bernoulli"])
    params["datasets"]["mnist"].update({"max_train": 300, "max_validation": 20, "max_test": 12})
    params["evaluate"].update({"n_images": 12, "iwae_k": 10, "latent_n": 12, "fid_n": 6, "fid_seeds": 1,
                               "grid_n": 4, "inception": "required", "inception_weights": str(inception_weights_file)})
    study = validate_study(params, "params.yaml", REPO / "catalogue.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEBENCH_MLFLOW", "0")
    prepare.run(study, "mnist", mirror=str(mirror))
    classifier.run(study, "mnist")
    ref = fid_reference.run(study, "mnist")
    assert ref["inception"].startswith("Inception-v3")
    train.run(study, "mnist", "vae_bernoulli", 0)
    m = evaluate.run(study, "mnist", "vae_bernoulli", 0)
    assert m["fid_inception_n"] == 6 and m["fid_inception_reference_n"] == 12 and m["fid_inception"] > 0

    from torchmetrics.image.fid import FrechetInceptionDistance

    model, _ = load_checkpoint(tmp_path / paths.CHECKPOINT.format(study=study.name, dataset="mnist", model="vae_bernoulli",
                                                               seed=0), "cpu")
    samples = prior_samples(model, 6, stream_seed(study.config.evaluate.seed, "fid_samples"),
                            study.config.evaluate.batch_size)
    fake = torch.round(samples.clamp(0, 1) * 255).to(torch.uint8).expand(-1, 3, -1, -1)
    prepared = tmp_path / paths.PREPARED.format(study=study.name, dataset="mnist")
    real = torch.from_numpy(load_prepared(prepared)["x_test"]).expand(-1, 3, -1, -1)
    metric = FrechetInceptionDistance(feature=2048, normalize=False, antialias=False,
                                      feature_extractor_weights_path=str(inception_weights_file)).double()
    metric.update(real, real=True)
    metric.update(fake, real=False)
    n_r, n_f = metric.real_features_num_samples, metric.fake_features_num_samples
    mu_r = metric.real_features_sum / n_r
    mu_f = metric.fake_features_sum / n_f
    cov_r = (metric.real_features_cov_sum - n_r * torch.outer(mu_r, mu_r)) / (n_r - 1)
    cov_f = (metric.fake_features_cov_sum - n_f * torch.outer(mu_f, mu_f)) / (n_f - 1)
    independent = frechet_distance(mu_r.numpy(), cov_r.numpy(), mu_f.numpy(), cov_f.numpy())
    assert m["fid_inception"] == pytest.approx(independent, rel=1e-6)


def test_inception_required_without_weights_fails_before_any_job(tmp_path, monkeypatch):
    """``inception: required`` with no weights anywhere (and no network) stops at validation with the file
    name, where to get it and where to put it; ``if_available`` validates and reports 'not computed'."""
    import torch.hub

    from vaebench.config import ConfigError
    from vaebench.metrics import inception
    from vaebench.validation import validate_study

    monkeypatch.delenv("VAEBENCH_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    params = tiny_params()
    params["evaluate"]["inception"] = "required"
    with pytest.raises(ConfigError) as err:
        validate_study(params, "params.yaml", REPO / "catalogue.yaml")
    msg = str(err.value)
    for needle in ("params.yaml", "evaluate.inception", inception.WEIGHTS_FILE, inception.INCEPTION_WEIGHTS_URL,
                   str(tmp_path / "hub"), "VAEBENCH_FID_WEIGHTS", "no network"):
        assert needle in msg, needle
    params["evaluate"]["inception"] = "if_available"
    validate_study(params, "params.yaml", REPO / "catalogue.yaml")
    params["evaluate"]["inception_weights"] = str(tmp_path / "typo.pth")
    with pytest.raises(ConfigError, match="typo.pth"):
        validate_study(params, "params.yaml", REPO / "catalogue.yaml")


def test_stage_commands_return_freed_heap_memory():
    """Stage commands start the malloc_trim thread (glibc), which returns freed heap blocks to the system."""
    import ctypes
    import threading

    from vaebench.cli import return_freed_memory

    try:
        ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert return_freed_memory(period_s=0.05)
    assert any(t.name == "malloc_trim" and t.daemon and t.is_alive() for t in threading.enumerate())


def test_every_record_key_is_declared_in_the_spec(evaluated):
    """Each field of the stage's metrics.json is declared in vaebench.metrics.spec (metric, setting or
    descriptive), and every declared field that is not optional is written."""
    from vaebench.metrics import spec

    _, _, out = evaluated
    for model, (record, _) in out.items():
        assert set(record) <= set(spec.FIELDS), (model, sorted(set(record) - set(spec.FIELDS)))
        missing = [k for k, f in spec.FIELDS.items() if not f.optional and k not in record]
        assert not missing, (model, missing)
