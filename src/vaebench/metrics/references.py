"""The FID reference files of a dataset (stage ``fid_reference``) as read by evaluation, the fixed test subset,
and the Inception weights a study's evaluation uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaebench import paths


def fixed_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` indices of a seeded random permutation of ``range(n_total)``, sorted: a fixed random
    subset (the same for every model; representative where the split's order is not, e.g. MNIST's test set,
    whose two halves differ). All indices when n >= n_total. int64 (min(n, n_total),)."""
    if n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return np.sort(perm[:n]).astype(np.int64)


def blurred(images: np.ndarray, size: int = 5) -> np.ndarray:
    """uint8 images (N, C, H, W) blurred by a ``size`` x ``size`` box filter per channel
    (``scipy.ndimage.uniform_filter``, edges reflected), rounded back to uint8: a reference set whose FID shows
    what a blur costs on this feature space."""
    from scipy.ndimage import uniform_filter

    out = uniform_filter(images.astype(np.float64), size=(1, 1, size, size), mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def uniform_noise_images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images of ``shape`` (N, C, H, W), every pixel uniform on 0..255 from ``numpy.random.default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def study_inception_weights(ecfg) -> Path | None:
    """The Inception weights an evaluation config (``EvaluateConfig``) uses: None when ``evaluate.inception`` is 'off' or is
    'if_available' and no file is present; raises ``InceptionWeightsUnavailable`` (a FileNotFoundError
    naming the file, where to get it and where to put it) when 'required' and none can be had (the
    download is tried), or when a configured path does not exist."""
    from vaebench.metrics.inception import resolve_weights, weights_available

    if ecfg.inception == "off":
        return None
    if ecfg.inception == "required":
        return resolve_weights(ecfg.inception_weights, allow_download=True)
    return weights_available(ecfg.inception_weights)


def inception_reference_status(study: str, dataset: str) -> dict:
    """The Inception reference of ``dataset`` in ``study`` written by ``run``: {'computed', 'status', and when computed
    'mu' (2048,), 'sigma' (2048, 2048), 'weights' (path), 'n_reference'}."""
    from vaebench.metrics.inception import load_statistics

    ref = load_statistics(paths.FID_INCEPTION_REFERENCE.format(study=study, dataset=dataset))
    ref["computed"] = bool(ref["computed"])
    return ref


def load_reference(study: str, dataset: str) -> dict:
    """The npz of ``run`` for ``dataset`` in ``study`` as a dict (arrays, and the scalars as Python values). ``available`` is False (with a
    ``reason``) for a dataset without a classifier, which has no statistics; files written before the field
    existed hold statistics (``available`` True)."""
    with np.load(paths.FID_REFERENCE.format(study=study, dataset=dataset)) as z:
        out = {k: z[k] for k in z.files}
    out["available"] = bool(out.get("available", True))
    if not out["available"]:
        out["reason"] = str(out.get("reason", "no classifier"))
        return out
    for k in ("n_reference", "floor_n"):
        out[k] = int(out[k])
    out["floor_fid"] = float(out["floor_fid"])
    for k in ("blurred_fid", "noise_fid"):
        out[k] = float(out[k]) if k in out else None
    out["floor_split"] = str(out["floor_split"])
    return out
