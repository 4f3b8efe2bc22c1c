"""Standard Inception FID as a library layer for the pipeline stages: weight lookup, features, statistics.

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})          (Heusel et al. 2017)

computed on the 2048-d pool3 features of Inception-v3 with the TF-ported ``inception-2015-12-05`` weights
(the network of the original TTUR code, ported to PyTorch by Seitzer's pytorch-fid and packaged for
torch-fidelity as ``weights-inception-2015-12-05-6726825d.pth``). The network, the weight loading and
the TF1-compatible bilinear resize to 299x299 are torch-fidelity's ``FeatureExtractorInceptionV3``, not
own code; the Fréchet distance and the statistics are ``vaebench.metrics.fid``'s.

Input protocol (the same as the classifier FID, see ``vaebench.metrics.fid``): uint8 images go in as they
are; float images in [0, 1] are clamped and quantised with round(x*255) to uint8 (``quantize_uint8``), so
real and generated images take exactly the same path. Grey images are replicated to 3 channels. Parmar et
al. 2022 ("On Aliased Resizing and Surprising Subtleties in GAN Evaluation", clean-fid) show that FID
moves with the resize filter and with quantisation/compression; Kynkäänniemi et al. 2023 ("The Role of
ImageNet Classes in Fréchet Inception Distance") that Inception FID can be matched without perceptual gain.
The resize used here (TF1 bilinear without antialiasing) is the one torch-fidelity reports as
reproducing TTUR's values, i.e. the one published Inception FIDs use; torchmetrics' default
(``antialias=True``) is a different number.

Weight file lookup (``resolve_weights``, ``weights_available``): the study's ``evaluate.inception_weights``,
else ``$VAEBENCH_FID_WEIGHTS``, else torch-fidelity's download cache
(``torch.hub.get_dir()/checkpoints/weights-inception-2015-12-05-6726825d.pth``, where
``torch.hub.load_state_dict_from_url`` puts it), else (only if allowed) a download into that cache.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import numpy as np
import torch

from vaebench.atomic import atomic_path
from vaebench.metrics.fid import _as_tensor, feature_statistics, quantize_uint8

WEIGHTS_ENV = "VAEBENCH_FID_WEIGHTS"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")

WEIGHTS_FILE = INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
STUDY_KEY = "evaluate.inception_weights"
FEATURE_DIM = 2048
DOWNLOAD_TIMEOUT_S = 30.0


class InceptionWeightsUnavailable(FileNotFoundError):
    """The FID Inception weight file is not where it was looked for (the message says what was tried,
    where to get the file and where to put it)."""


def cache_path() -> Path:
    """Where torch-fidelity (and torchmetrics, which builds on it) look for and download the weights:
    ``torch.hub.get_dir()/checkpoints/<file name of the URL>`` (``torch.hub.load_state_dict_from_url``'s
    default ``model_dir``; ``torch.hub.get_dir()`` is ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``,
    unless ``torch.hub.set_dir`` was called)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _unavailable(tried: list[str], reason: str) -> InceptionWeightsUnavailable:
    cache = cache_path()
    return InceptionWeightsUnavailable(
        f"Inception FID weights unavailable: {reason}. Tried: {'; '.join(tried) or 'nothing'}. "
        f"The file needed is {WEIGHTS_FILE} (the TF-ported FID Inception-v3 'inception-2015-12-05' weights in "
        f"torch-fidelity's layout; pytorch-fid's pt_inception-2015-12-05-6726825d.pth is the same network in "
        f"another key layout and does not load). Get it from {INCEPTION_WEIGHTS_URL} (on a machine with "
        f"internet) and either put it at {cache} (torch-fidelity's cache, found automatically), or set "
        f"the study key {STUDY_KEY}: /path/to/{WEIGHTS_FILE}, or the environment variable "
        f"{WEIGHTS_ENV}=/path/to/{WEIGHTS_FILE}.")


def _lookup(configured: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """(file or None, descriptions of the places tried). Raises for a configured/env path that is missing."""
    tried: list[str] = []
    if configured is not None and str(configured) != "":
        path = Path(configured).expanduser()
        if path.is_file():
            return path, tried
        tried.append(f"configured path {path} ({STUDY_KEY}): does not exist")
        raise _unavailable(tried, f"the configured weight file {path} does not exist")
    tried.append(f"{STUDY_KEY}: not set")
    env = os.environ.get(WEIGHTS_ENV, "")
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return path, tried
        tried.append(f"${WEIGHTS_ENV}={env}: does not exist")
        raise _unavailable(tried, f"${WEIGHTS_ENV} points to {path}, which does not exist")
    tried.append(f"${WEIGHTS_ENV}: not set")
    cache = cache_path()
    if cache.is_file():
        return cache, tried
    tried.append(f"cache {cache}: no file")
    return None, tried


def weights_available(configured: str | os.PathLike | None = None) -> Path | None:
    """The weight file found by ``resolve_weights``' lookup (study path, ``$VAEBENCH_FID_WEIGHTS``, cache),
    never downloading; None when nothing is configured and the cache has no file (for studies that
    compute Inception FID only where the weights are present).

    Raises:
        InceptionWeightsUnavailable: a configured path or ``$VAEBENCH_FID_WEIGHTS`` names a file that does
            not exist (an explicit setting that points nowhere is a mistake, not "absent").
    """
    return _lookup(configured)[0]


def resolve_weights(configured: str | os.PathLike | None, allow_download: bool = False,
                    timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The Inception weight file, looked up in this order:

    1. ``configured`` (the study's ``evaluate.inception_weights``): must exist if given, even when another
       location has the file;
    2. ``$VAEBENCH_FID_WEIGHTS`` (same rule);
    3. torch-fidelity's cache ``cache_path()``;
    4. if ``allow_download``: download ``INCEPTION_WEIGHTS_URL`` into that cache with
       ``torch.hub.download_url_to_file`` (written to a ``.partial`` file and moved into place, so an
       interrupted download leaves no truncated weight file), every socket operation limited to
       ``timeout_s`` seconds.

    Returns:
        path of the weight file (not loaded or checked here; ``inception_features`` loads it).
    Raises:
        InceptionWeightsUnavailable (a FileNotFoundError): not found and not downloadable; the message names
            the file, the URL, the cache path, the study key and the environment variable, what was tried
            and, after a failed download, the download's error.
    """
    path, tried = _lookup(configured)
    if path is not None:
        return path
    if not allow_download:
        raise _unavailable(tried + ["download: not allowed"], "not found and downloading is not allowed")
    cache = cache_path()
    old_timeout = socket.getdefaulttimeout()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        socket.setdefaulttimeout(timeout_s)  # download_url_to_file's urlopen has no timeout argument
        torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(cache), hash_prefix=None, progress=False)
    except Exception as e:  # noqa: BLE001  no network, HTTP error, timeout, unwritable cache: all reported
        raise _unavailable(tried + [f"download from {INCEPTION_WEIGHTS_URL} to {cache} failed "
                                    f"({type(e).__name__}: {e})"], "the download failed") from e
    finally:
        socket.setdefaulttimeout(old_timeout)
    if not cache.is_file():
        raise _unavailable(tried + [f"download to {cache}: no file afterwards"], "the download failed")
    return cache


# -----------------------------------------------------------------------------
# Features and statistics

@functools.lru_cache(maxsize=2)
def _extractor(path: str, mtime_ns: int, size: int) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 (pool3 '2048' features) loaded from ``path``, eval mode, no grad;
    cached per (path, modification time, size) so a replaced file is reloaded."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError("Inception FID needs the torch-fidelity package: `pip install torch-fidelity`.") from e
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    return net.eval().requires_grad_(False)


def load_extractor(weights: str | os.PathLike) -> torch.nn.Module:
    """The (cached) torch-fidelity ``FeatureExtractorInceptionV3`` for the weight file ``weights``.

    Raises:
        FileNotFoundError: ``weights`` does not exist. RuntimeError: the file is not a state_dict of this
            architecture (``load_state_dict`` is strict). ImportError: torch-fidelity missing.
    """
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"Inception weight file {path} does not exist (see resolve_weights)")
    st = path.stat()
    return _extractor(str(path), st.st_mtime_ns, st.st_size)


def _as_rgb_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 or float in [0, 1] -> (N, 3, H, W) uint8 (quantised, grey replicated)."""
    x = quantize_uint8(_as_tensor(images))
    if x.dim() != 4:
        raise ValueError(f"Inception features need images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"Inception features need 1 or 3 channels, got C={x.shape[1]} (shape {tuple(x.shape)})")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def inception_features(images: np.ndarray | torch.Tensor, weights: str | os.PathLike,
                       device: str | torch.device = "cpu", batch_size: int = 50) -> np.ndarray:
    """Inception-v3 pool3 features of ``images``: torch-fidelity's ``FeatureExtractorInceptionV3`` loaded
    from ``weights`` (resize to 299x299 with TF1-compatible bilinear interpolation, (x-128)/128, float32).

    Args:
        images: (N, C, H, W), C in {1, 3}: uint8 0..255, or float in [0, 1] (clamped and rounded to uint8
            with ``quantize_uint8``, exactly like the classifier FID). Any H, W (resized to 299).
        weights: weight file (``resolve_weights``). device: where the network runs.
        batch_size: images per forward pass (~0.1-0.3 s per image on CPU).
    Returns:
        (N, 2048) float64 features (unitless activations, post-ReLU average pool, >= 0).
    Raises:
        ValueError: not 4-d, C not in {1, 3}, NaN/inf in float images. TypeError: neither float nor uint8.
        FileNotFoundError/RuntimeError: weight file missing / not this architecture.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _as_rgb_uint8(images)
    net = load_extractor(weights).to(device)
    out = [net(x[i:i + batch_size].to(device))[0].double().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float64)


def inception_statistics(images: np.ndarray | torch.Tensor, weights: str | os.PathLike,
                         device: str | torch.device = "cpu", batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2048,) and unbiased covariance (2048, 2048), float64, of ``inception_features(images, ...)``
    (``feature_statistics``). The FID of two sets is ``frechet_distance(*stats_a, *stats_b)``.

    Raises:
        ValueError: fewer than 2 images, or as ``inception_features``.
    """
    n = _as_tensor(images).shape[0] if np.ndim(images) > 0 else 0
    if n < 2:  # fail before the forward pass, not after it
        raise ValueError(f"inception_statistics needs N >= 2 images, got {n}")
    return feature_statistics(inception_features(images, weights, device, batch_size))


# -----------------------------------------------------------------------------
# Statistics files

def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **scalars) -> None:
    """Write ``mu`` (d,) and ``sigma`` (d, d) (as float64) and scalar metadata (numbers, strings, bools;
    e.g. ``n=10000, split="test", weights="weights-inception-...pth"``) to an npz at ``path``, atomically.

    Raises:
        ValueError: shapes inconsistent, or a non-scalar / None value in ``scalars``.
    """
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"save_statistics needs mu (d,) and sigma (d, d), got {mu.shape} and {sigma.shape}")
    arrays = {}
    for k, v in scalars.items():
        a = np.asarray(v)
        if v is None or a.ndim != 0 or a.dtype == object:
            raise ValueError(f"save_statistics: {k}={v!r} is not a scalar number/string/bool")
        arrays[k] = a
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, **arrays)


def load_statistics(path: str | os.PathLike) -> dict:
    """The npz of ``save_statistics`` as a dict: ``mu`` (d,), ``sigma`` (d, d) float64 arrays and the
    scalars as Python values (int, float, str, bool).

    Raises:
        FileNotFoundError: no file. KeyError: ``mu`` or ``sigma`` missing.
    """
    with np.load(path, allow_pickle=False) as z:
        out = {k: (z[k] if k in ("mu", "sigma") else z[k].item()) for k in z.files}
    for k in ("mu", "sigma"):
        if k not in out:
            raise KeyError(f"{path}: no {k!r} array (not a statistics file written by save_statistics)")
    return out
