"""Inception FID library layer (``vaebench.metrics.inception``): weight lookup order and error messages,
torch-fidelity features and statistics, statistics files. Offline: the real FID weights cannot be
downloaded here, so a random-init state_dict of torch-fidelity's own Inception-v3 stands in for them
(values are meaningless, the code path and the file format are the real ones)."""
import os
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebench.metrics.fid import feature_statistics, frechet_distance, quantize_uint8
from vaebench.metrics.inception import (INCEPTION_WEIGHTS_URL, STUDY_KEY, WEIGHTS_ENV, WEIGHTS_FILE, InceptionWeightsUnavailable, cache_path,
                                        inception_features, inception_statistics, load_extractor,
                                        load_statistics, resolve_weights, save_statistics, weights_available)

tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(scope="module")
def weights(inception_weights_file) -> Path:
    return inception_weights_file


@pytest.fixture
def clean(monkeypatch, tmp_path) -> Path:
    """No $VAEBENCH_FID_WEIGHTS and an empty torch hub dir (restored afterwards); returns the hub dir."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # what torch.hub.set_dir sets
    return tmp_path / "hub"


def _images(rng, n):
    """Grey 28x28 'real' uint8 noise and 'generated' float images in [0, 1] that look different."""
    real = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    ramp = np.linspace(0, 1, 28, dtype=np.float32)
    fake = np.clip(ramp[None, None, :, None] * ramp[None, None, None, :]
                   + 0.2 * rng.random((n, 1, 28, 28), dtype=np.float32), 0, 1)
    return real, fake


# -----------------------------------------------------------------------------
# Features and FID

@pytest.fixture(scope="module")
def pair(weights):
    """3 grey 'real' uint8 and 3 float 'generated' images; our statistics of both (float64 features of
    torch-fidelity's extractor); torchmetrics' FrechetInceptionDistance updated with the same images,
    quantised and replicated to 3 channels by hand (the independent computation: its own forward copy,
    TF1 resize with antialias=False since its default True is another resize, its own accumulation)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _images(np.random.default_rng(0), 3)
    feats_real = inception_features(real, weights, batch_size=2)  # 2 batches
    ours = (feature_statistics(feats_real), inception_statistics(fake, weights))
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights), normalize=False,
                                      antialias=False)
    metric.update(torch.from_numpy(real).expand(-1, 3, -1, -1), real=True)
    metric.update(quantize_uint8(torch.from_numpy(fake)).expand(-1, 3, -1, -1), real=False)
    return feats_real, ours, metric


def test_statistics_match_torchmetrics(weights, clean, pair):
    """resolve_weights -> inception_features/statistics equal the mean and covariance torchmetrics
    accumulates from its own forward pass of the same images and weight file."""
    assert resolve_weights(weights, allow_download=False) == weights
    feats, ours, metric = pair
    assert feats.shape == (3, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert (feats >= 0).all() and feats.std(axis=0).max() > 0  # post-ReLU pool, differs between images
    for (mu, sigma), which in zip(ours, ("real", "fake")):
        n = int(getattr(metric, f"{which}_features_num_samples"))
        mean = getattr(metric, f"{which}_features_sum").double() / n
        cov = (getattr(metric, f"{which}_features_cov_sum").double() - n * torch.outer(mean, mean)) / (n - 1)
        assert n == 3 and mu.shape == (2048,) and sigma.shape == (2048, 2048)
        np.testing.assert_allclose(mu, mean.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sigma, cov.numpy(), rtol=1e-6, atol=1e-9 * np.abs(sigma).max())


@pytest.mark.slow  # 2048x2048 eigendecompositions in both: ~60 s on 2 shared CPU cores
def test_fid_matches_torchmetrics(pair):
    """The FID from our statistics + frechet_distance equals torchmetrics' FrechetInceptionDistance.compute()
    (rank-deficient covariances, N=3 < 2048, in both)."""
    _, ours, metric = pair
    value, theirs = frechet_distance(*ours[0], *ours[1]), float(metric.compute())
    assert value > 0 and np.isfinite(value)
    assert value == pytest.approx(theirs, rel=1e-6), (value, theirs)  # seen: 1.4e-8 (theirs is float32)


def test_grey_is_replicated_and_float_is_quantised(weights):
    """Grey uint8 images give the features of their 3-channel copies, and float images give the features
    of the uint8 images they round to (the same path as the classifier FID)."""
    real, _ = _images(np.random.default_rng(1), 1)
    rgb_float = np.repeat(real, 3, axis=1).astype(np.float32) / 255 + np.float32(0.4 / 255)
    np.testing.assert_array_equal(inception_features(real, weights), inception_features(rgb_float, weights))


def test_bad_inputs(weights, tmp_path):
    with pytest.raises(ValueError, match="C=2"):
        inception_features(np.zeros((2, 2, 28, 28), np.uint8), weights)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        inception_features(np.zeros((2, 28, 28), np.uint8), weights)
    with pytest.raises(ValueError, match="NaN"):
        inception_features(np.full((2, 1, 28, 28), np.nan, np.float32), weights)
    with pytest.raises(ValueError, match="N >= 2"):
        inception_statistics(np.zeros((1, 1, 28, 28), np.uint8), weights)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")  # not this architecture
    with pytest.raises(RuntimeError):
        load_extractor(tmp_path / "wrong.pth")
    with pytest.raises(FileNotFoundError):
        load_extractor(tmp_path / "absent.pth")


# -----------------------------------------------------------------------------
# Weight lookup

def test_cache_path_is_torch_fidelitys(weights, clean, monkeypatch):
    """The cache is where torch-fidelity itself looks: same URL, and with downloading made impossible its
    extractor (weights_path=None) loads the file we put at ``cache_path()``."""
    assert INCEPTION_WEIGHTS_URL == tfi.URL_INCEPTION_V3
    assert cache_path() == clean / "checkpoints" / WEIGHTS_FILE
    cache_path().parent.mkdir(parents=True)
    os.symlink(weights, cache_path())

    def no_download(*args, **kwargs):
        raise AssertionError("torch-fidelity tried to download although the file is in the cache")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    assert torch.equal(net.fc.weight, load_extractor(weights).fc.weight)


def _put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_lookup_order(clean, tmp_path, monkeypatch):
    configured, env = _put(tmp_path / "study" / WEIGHTS_FILE), _put(tmp_path / "env" / WEIGHTS_FILE)
    cache = _put(cache_path())
    monkeypatch.setenv(WEIGHTS_ENV, str(env))
    assert resolve_weights(configured, allow_download=False) == configured  # study path wins
    assert weights_available(str(configured)) == configured
    assert resolve_weights(None, allow_download=False) == env  # then the environment variable
    assert resolve_weights("", allow_download=False) == env  # empty study value = not set
    monkeypatch.delenv(WEIGHTS_ENV)
    assert resolve_weights(None, allow_download=False) == cache  # then the cache
    assert weights_available(None) == cache


def test_missing_configured_path_is_an_error(clean, tmp_path, monkeypatch):
    _put(cache_path())
    monkeypatch.setenv(WEIGHTS_ENV, str(_put(tmp_path / "env" / WEIGHTS_FILE)))
    missing = tmp_path / "typo" / WEIGHTS_FILE
    for call in (lambda: resolve_weights(missing, allow_download=True), lambda: weights_available(missing)):
        with pytest.raises(InceptionWeightsUnavailable, match="typo") as err:
            call()
        assert str(missing) in str(err.value) and STUDY_KEY in str(err.value)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "envtypo.pth"))
    with pytest.raises(InceptionWeightsUnavailable, match="envtypo.pth"):
        resolve_weights(None, allow_download=False)


def test_nothing_anywhere(clean, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("download attempted"))
    assert weights_available(None) is None
    with pytest.raises(InceptionWeightsUnavailable) as err:
        resolve_weights(None, allow_download=False)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    for needle in (WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, str(cache_path()), WEIGHTS_ENV, STUDY_KEY, "not allowed"):
        assert needle in msg, needle


def test_download_failure_is_reported(clean, monkeypatch):
    seen = {}

    def offline(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, timeout=socket.getdefaulttimeout())
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(InceptionWeightsUnavailable) as err:
        resolve_weights(None, allow_download=True, timeout_s=5)
    msg = str(err.value)
    assert "download" in msg and "name resolution" in msg and "URLError" in msg
    for needle in (WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, str(cache_path())):
        assert needle in msg, needle
    assert seen == {"url": INCEPTION_WEIGHTS_URL, "dst": str(cache_path()), "timeout": 5}
    assert socket.getdefaulttimeout() == before  # global timeout restored
    assert not cache_path().exists()


def test_download_success_lands_in_cache(clean, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, *a, **k: Path(dst).write_bytes(b"w"))
    assert resolve_weights(None, allow_download=True) == cache_path()
    assert cache_path().read_bytes() == b"w"


# -----------------------------------------------------------------------------
# Statistics files

def test_statistics_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    mu, a = rng.normal(size=5), rng.normal(size=(5, 5))
    sigma = a @ a.T
    path = tmp_path / "stats" / "inception_ref.npz"
    save_statistics(path, mu, sigma, n=100, split="test", weights=WEIGHTS_FILE, fid_floor=1.5, ok=True)
    got = load_statistics(path)
    np.testing.assert_array_equal(got["mu"], mu)
    np.testing.assert_array_equal(got["sigma"], sigma)
    assert got["sigma"].dtype == np.float64
    assert (got["n"], got["split"], got["weights"], got["fid_floor"], got["ok"]) == (100, "test", WEIGHTS_FILE,
                                                                                    1.5, True)
    assert type(got["n"]) is int and type(got["split"]) is str
    assert sorted(p.name for p in path.parent.iterdir()) == ["inception_ref.npz"]  # no temporary left
    with pytest.raises(ValueError, match="sigma"):
        save_statistics(path, mu, sigma[:4])
    with pytest.raises(ValueError, match="scalar"):
        save_statistics(path, mu, sigma, bad=[1, 2])
    with pytest.raises(ValueError, match="scalar"):
        save_statistics(path, mu, sigma, none=None)
    assert load_statistics(path)["n"] == 100  # failed writes left the file untouched


class _RunsCode:
    """Unpickling this calls a function: a weights file must never be able to do that."""

    def __reduce__(self):
        return (os.system, ("touch should-not-exist",))


def test_a_damaged_or_unsafe_weights_file_stops_before_torch_fidelity_unpickles_it(weights, tmp_path, monkeypatch):
    """Truncated, not a state dict, or a pickle that runs code: one line naming the file and where to get it, and
    nothing from the file runs (torch.load(weights_only=True) first)."""
    from vaebench.metrics.inception import INCEPTION_WEIGHTS_URL, InceptionWeightsDamaged, load_extractor

    monkeypatch.chdir(tmp_path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[:1000])
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": torch.zeros(1), "x": _RunsCode()}, unsafe)
    for bad in (truncated, not_a_dict, unsafe):
        with pytest.raises(InceptionWeightsDamaged) as err:
            load_extractor(bad)
        msg = str(err.value)
        assert str(bad) in msg and INCEPTION_WEIGHTS_URL in msg and "\n" not in msg, msg
    assert not (tmp_path / "should-not-exist").exists()
    load_extractor(weights)                       # the stand-in weights pass the check
