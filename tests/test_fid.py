"""Fréchet distance, classifier FID (torchmetrics with a custom extractor) and the Inception entry point."""

import numpy as np
import pytest
import scipy.linalg
import torch

from conftest import MIRROR
from vaebench.data import prepare_dataset
from vaebench.data.prepared import load_prepared
from vaebench.metrics.classifier import ClassifierConfig, train_classifier
from vaebench.metrics.fid import (ClassifierFeatures, feature_statistics, fid_classifier,
                          frechet_distance, quantize_uint8)

needs_mirror = pytest.mark.mirror("mnist")


def scipy_fid(mu1, s1, mu2, s2):
    """Independent reference (pytorch-fid's formula): sqrtm of the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_features(rng, n, d, shift=0.0):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a.T + shift


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    f1 = gaussian_features(rng, 2000, 16)
    f2 = gaussian_features(rng, 2000, 16, shift=0.3) * 1.5
    stats1, stats2 = feature_statistics(f1), feature_statistics(f2)
    np.testing.assert_allclose(frechet_distance(*stats1, *stats2), scipy_fid(*stats1, *stats2), rtol=1e-8)
    # closed form for two known Gaussians: ||mu||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) with S = diag
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert frechet_distance(np.zeros(2), s1, np.array([1.0, 2.0]), s2) == pytest.approx(5 + 10 + 5 - 2 * (3 + 2))


def test_self_distance_zero_and_shift_increases():
    rng = np.random.default_rng(1)
    f = gaussian_features(rng, 1000, 32)
    stats = feature_statistics(f)
    assert abs(frechet_distance(*stats, *stats)) < 1e-8
    values = [frechet_distance(*stats, *feature_statistics(f + s)) for s in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == pytest.approx(0, abs=1e-8)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(32 * 1.0, rel=1e-6)  # pure mean shift: ||delta||^2


def test_rank_deficient_covariance_is_finite():
    rng = np.random.default_rng(2)
    f1, f2 = gaussian_features(rng, 10, 64), gaussian_features(rng, 10, 64)  # N < d
    value = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert np.isfinite(value) and value > 0


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


def test_quantize_rounds_and_clamps():
    x = torch.tensor([-0.1, 0.0, 0.49 / 255, 0.51 / 255, 0.5, 254.6 / 255, 1.0, 1.2])
    assert quantize_uint8(x).tolist() == [0, 0, 0, 1, 128, 255, 255, 255]  # round, not floor
    u8 = torch.tensor([3, 250], dtype=torch.uint8)
    assert quantize_uint8(u8) is u8
    with pytest.raises(ValueError, match="NaN"):
        quantize_uint8(torch.tensor([float("nan")]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "m.npz"
    prepare_dataset("mnist", {"max_train": 2000, "max_validation": 10, "max_test": 1000}, out, mirror=MIRROR)
    data = load_prepared(out)
    model, _ = train_classifier(data, ClassifierConfig(epochs=1, batch_size=50, feature_dim=32, seed=0), "cpu")
    return data, model


@needs_mirror
def test_fid_classifier_real_vs_noise(tiny):
    data, model = tiny
    real, other = data["x_test"][:500], data["x_test"][500:1000]
    fid_real = fid_classifier(model, real, other.astype(np.float32) / 255, "cpu", batch_size=128)
    noise = np.random.default_rng(0).random((500, 1, 28, 28), dtype=np.float32)
    fid_noise = fid_classifier(model, real, noise, "cpu", batch_size=128)
    assert 0 < fid_real and fid_noise > 20 * fid_real, (fid_real, fid_noise)
    # torchmetrics' accumulated statistics agree with our own float64 path
    feats = ClassifierFeatures(model)
    ours = frechet_distance(*feature_statistics(feats(torch.from_numpy(real))),
                            *feature_statistics(feats(torch.from_numpy(other))))
    assert fid_real == pytest.approx(ours, rel=1e-4)


@needs_mirror
def test_fid_classifier_same_path_for_both_sets(tiny):
    data, model = tiny
    real = data["x_test"][:200]
    # float fakes that quantise back to the real uint8 images give (numerically) zero
    fake = real.astype(np.float32) / 255 + np.float32(0.3 / 255)
    assert abs(fid_classifier(model, real, fake, "cpu")) < 1e-6
    with pytest.raises(ValueError, match="at least 2"):
        fid_classifier(model, real, fake[:1], "cpu")
    with pytest.raises(ValueError, match="C, H, W"):
        fid_classifier(model, real, np.zeros((5, 1, 27, 28), np.float32), "cpu")
