"""The errors, reader result and split helpers every dataset module shares."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaebench.errors import StageError


class DataIntegrityError(StageError):
    """A dataset file fails its checksum or its format; the message names the file (and member) and the fault."""


class MirrorError(StageError, FileNotFoundError):
    """The offline mirror lacks its root, the dataset's folder or a file; the message names it and the layout."""


class DatasetDownloadError(StageError):
    """A download failed, or the dataset is never downloaded; the message names the URLs, files and mirror layout."""


@dataclass
class Prepared:
    """A reader's result. ``splits``: {"train" | "val" | "test": (images uint8 (N, C, H, W) or (N, H, W), labels
    int64 (N,), -1 when unlabelled)}; ``split_meta``: ``meta["split"]``; ``sums``: {file: SHA-256};
    ``extra``: further ``.npz`` arrays; ``more_meta``: further ``meta`` keys."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    split_meta: dict[str, Any]
    sums: dict[str, str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    more_meta: dict[str, Any] = field(default_factory=dict)


SPLIT_CAPS = {"train": "max_train", "val": "max_validation", "test": "max_test"}

def seeded_split(n_images: int, n_validation: int, n_test: int, split_seed: int) -> dict[str, np.ndarray]:
    """{"train", "val", "test": sorted int64 indices}: ``perm = numpy.random.RandomState(split_seed).permutation(
    n_images)``, test = ``perm[:n_test]``, val = the next ``n_validation``, train = the rest.

    Raises:
        ValueError: ``n_validation + n_test >= n_images``.
    """
    if n_validation + n_test >= n_images:
        raise ValueError(f"n_validation + n_test = {n_validation + n_test} leaves no training image of {n_images}")
    perm = np.random.RandomState(int(split_seed)).permutation(n_images).astype(np.int64)
    return {"train": np.sort(perm[n_test + n_validation:]), "val": np.sort(perm[n_test:n_test + n_validation]),
            "test": np.sort(perm[:n_test])}


def seeded_subset(idx: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """``idx``, or when ``cap`` is smaller, its entries at the first ``cap`` of ``RandomState(seed).permutation(
    len(idx))``, in their original order."""
    if cap is None or cap >= len(idx):
        return idx
    return idx[np.sort(np.random.RandomState(seed).permutation(len(idx))[:cap])]


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Images uint8 (N, H, W) grey or (N, H, W, 3) RGB -> uint8 (N, size, size[, 3]), each with Pillow's bilinear
    filter (``Image.resize((size, size), Image.Resampling.BILINEAR)``, what torchvision's ``Resize`` does on a PIL
    image). Raises ValueError for another dtype or shape."""
    from PIL import Image

    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"resize_bilinear: expected uint8 (N, H, W) or (N, H, W, 3) images, got {images.dtype} "
                         f"{images.shape}")
    out = np.empty((len(images), size, size) + images.shape[3:], np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.Resampling.BILINEAR))
    return out


def first_n(x: np.ndarray, cap: int | None) -> np.ndarray:
    """The first ``cap`` entries of ``x`` (all when ``cap`` is None)."""
    return x if cap is None else x[:cap]


def index_sha256(idx: np.ndarray) -> str:
    """SHA-256 of an index array as little-endian int64 bytes."""
    return hashlib.sha256(np.asarray(idx).astype("<i8").tobytes()).hexdigest()
