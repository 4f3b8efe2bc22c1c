"""Inception FID layer: weight lookup, 2048-d pool3 features of Inception-v3 with the TF-ported
``inception-2015-12-05`` weights (torch-fidelity's ``FeatureExtractorInceptionV3``; Heusel et al. 2017), statistics.
Images are quantised to uint8 like the classifier FID; grey is replicated to 3 channels."""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import numpy as np
import torch

from vaebench.atomic import atomic_path
from vaebench.errors import StageError, one_line
from vaebench.metrics.fid import _as_tensor, feature_statistics, quantize_uint8

WEIGHTS_ENV = "VAEBENCH_FID_WEIGHTS"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")

WEIGHTS_FILE = INCEPTION_WEIGHTS_URL.rsplit("/", 1)[-1]
STUDY_KEY = "evaluate.inception_weights"
FEATURE_DIM = 2048
DOWNLOAD_TIMEOUT_S = 30.0


class InceptionWeightsUnavailable(FileNotFoundError):
    """The FID Inception weight file was not found; the message says what was tried and where to put it."""


def cache_path() -> Path:
    """torch-fidelity's weight cache file, ``torch.hub.get_dir()/checkpoints/<file name of the URL>``."""
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
    """``resolve_weights``' lookup without download, or None. Raises InceptionWeightsUnavailable when a configured
    path or ``$VAEBENCH_FID_WEIGHTS`` names a missing file."""
    return _lookup(configured)[0]


def resolve_weights(configured: str | os.PathLike | None, allow_download: bool = False,
                    timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Path of the weight file: ``configured``, else ``$VAEBENCH_FID_WEIGHTS``, else the cache, else (if
    ``allow_download``) a download into the cache. Raises InceptionWeightsUnavailable when not found."""
    path, tried = _lookup(configured)
    if path is not None:
        return path
    if not allow_download:
        raise _unavailable(tried + ["download: not allowed"], "not found and downloading is not allowed")
    cache = cache_path()
    old_timeout = socket.getdefaulttimeout()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        socket.setdefaulttimeout(timeout_s)
        torch.hub.download_url_to_file(INCEPTION_WEIGHTS_URL, str(cache), hash_prefix=None, progress=False)
    except Exception as e:  # noqa: BLE001
        raise _unavailable(tried + [f"download from {INCEPTION_WEIGHTS_URL} to {cache} failed "
                                    f"({type(e).__name__}: {e})"], "the download failed") from e
    finally:
        socket.setdefaulttimeout(old_timeout)
    if not cache.is_file():
        raise _unavailable(tried + [f"download to {cache}: no file afterwards"], "the download failed")
    return cache


class InceptionWeightsDamaged(StageError):
    """The weight file is not a state dict of tensors (damaged, truncated or not a weights file)."""


def check_weights_file(path: str | os.PathLike) -> None:
    """Read ``path`` with ``torch.load(weights_only=True)`` (no code from the file runs) and check that it is a
    state dict of tensors, before torch-fidelity unpickles it with ``weights_only=False``.

    Raises:
        InceptionWeightsDamaged: one line naming the file, what is wrong and where to get the file.
    """
    where = f"get {WEIGHTS_FILE} from {INCEPTION_WEIGHTS_URL} again"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InceptionWeightsDamaged(f"Inception weight file {path} is damaged or not a plain weights file "
                                      f"({one_line(e)}): {where}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsDamaged(f"Inception weight file {path} holds no state dict of tensors: {where}")


@functools.lru_cache(maxsize=2)
def _extractor(path: str, mtime_ns: int, size: int) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 from ``path`` (checked by :func:`check_weights_file` first), eval mode,
    cached per (path, mtime, size)."""
    check_weights_file(path)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError("Inception FID needs the torch-fidelity package: `pip install torch-fidelity`.") from e
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    return net.eval().requires_grad_(False)


def load_extractor(weights: str | os.PathLike) -> torch.nn.Module:
    """The cached extractor for ``weights``. Raises FileNotFoundError, InceptionWeightsDamaged, RuntimeError (not
    this architecture) or ImportError (no torch-fidelity)."""
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
    """Pool3 features of images (N, C, H, W), C in {1, 3}, uint8 or float in [0, 1]: (N, 2048) float64. Raises
    ValueError, TypeError, FileNotFoundError or RuntimeError as ``_as_rgb_uint8`` and ``load_extractor``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _as_rgb_uint8(images)
    net = load_extractor(weights).to(device)
    out = [net(x[i:i + batch_size].to(device))[0].double().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float64)


def inception_statistics(images: np.ndarray | torch.Tensor, weights: str | os.PathLike,
                         device: str | torch.device = "cpu", batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2048,) and unbiased covariance (2048, 2048), float64, of the features. Raises ValueError (N < 2)."""
    n = _as_tensor(images).shape[0] if np.ndim(images) > 0 else 0
    if n < 2:
        raise ValueError(f"inception_statistics needs N >= 2 images, got {n}")
    return feature_statistics(inception_features(images, weights, device, batch_size))


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **scalars) -> None:
    """Atomically write ``mu`` (d,), ``sigma`` (d, d) float64 and scalar metadata to an npz. Raises ValueError."""
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
    """``save_statistics``' npz as a dict of arrays and Python scalars. Raises FileNotFoundError or KeyError."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: (z[k] if k in ("mu", "sigma") else z[k].item()) for k in z.files}
    for k in ("mu", "sigma"):
        if k not in out:
            raise KeyError(f"{path}: no {k!r} array (not a statistics file written by save_statistics)")
    return out
