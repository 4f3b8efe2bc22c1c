"""What every dataset reader shares: the errors, checksum verification, the seeded split and the result a reader
returns to :func:`vaebench.data.prepare.prepare_dataset`.

A registered dataset whose files need their own parser lives in its own module of this package (``cifar10.py``,
``svhn.py``, ``celeba.py``) holding its settings class, its reader and its registry entry (``ENTRY``);
``vaebench.data.prepare`` imports those modules to build ``DATASETS``. The modules import this one, never
``prepare``, so the registry is complete as soon as ``prepare`` is imported (``vaebench.config`` builds its
``Literal`` of dataset names at import time).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import StageError


class DataIntegrityError(StageError):
    """A dataset file's content does not match its recorded checksum, or it is not valid data of its format (IDX,
    MATLAB, a CIFAR pickle, a zip of JPEGs, a partition list): the message names the file (and the member inside an
    archive) and what is wrong."""


class MirrorError(StageError, FileNotFoundError):
    """The offline mirror lacks something the prepare stage reads: its root folder, the dataset's folder in it, or
    a file there. The message names the missing folder or file and shows the layout expected
    (:func:`vaebench.data.prepare.mirror_layout`). Also a FileNotFoundError (the CLI reports it as a missing file,
    exit code 2)."""


class DatasetDownloadError(StageError):
    """A dataset could not be downloaded (or, like CelebA, is never downloaded automatically); the message names the
    dataset, the URLs tried, the files expected and the offline mirror layout that avoids the download."""


@dataclass
class Prepared:
    """What a dataset reader returns: everything :func:`vaebench.data.prepare.prepare_dataset` writes.

    Attributes:
        splits: ``{"train" | "val" | "test": (images, labels)}``; images uint8 ``(N, C, H, W)`` (or ``(N, H, W)``
            for grey images: a channel axis is added), labels int64 ``(N,)`` (-1 for an unlabelled dataset).
        split_meta: ``meta["split"]``: at least ``description``; the rule, seed and source counts where relevant.
        sums: ``{file name: SHA-256 hex digest}`` of every file read.
        extra: further arrays of the ``.npz`` (e.g. ``source_index_<split>``).
        more_meta: further keys of ``meta`` (e.g. ``classes``, ``preprocessing``).
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    split_meta: dict[str, Any]
    sums: dict[str, str]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    more_meta: dict[str, Any] = field(default_factory=dict)


# meta / cfg key of each split's cap
SPLIT_CAPS = {"train": "max_train", "val": "max_validation", "test": "max_test"}

ALGORITHM_NAMES = {"md5": "MD5", "sha256": "SHA-256"}


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of the file at ``path``, read in 1 MiB chunks (a 1.4 GB archive is never held in memory).
    Returns ``{algorithm: hex digest}`` for each of ``algorithms`` (hashlib names)."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def check_digests(shown: str, expected: dict[str, str | None], actual: dict[str, str]) -> None:
    """Compare recorded and actual digests, MD5 first then SHA-256 (an algorithm without a recorded sum is skipped).

    Raises:
        DataIntegrityError: ``"<MD5|SHA-256> mismatch for <shown>: expected <recorded>, got <actual>"``.
    """
    for algo in ("md5", "sha256"):
        want = expected.get(algo)
        if want is not None and actual[algo] != want:
            raise DataIntegrityError(f"{ALGORITHM_NAMES[algo]} mismatch for {shown}: expected {want}, got "
                                     f"{actual[algo]}")


def verify_file(spec: dict, folder: str | os.PathLike, fname: str) -> dict[str, str]:
    """Check the file ``<folder>/<fname>`` against the sums the registry entry ``spec`` records for it
    (``spec["md5"][fname]``, ``spec["sha256"][fname]``; at least one must be recorded) before anything parses it.

    Returns:
        ``{"md5": ..., "sha256": ...}`` of the file as read.
    Raises:
        FileNotFoundError: the file is missing (names the path).
        DataIntegrityError: a sum differs (names the file, the expected and the actual sum).
    """
    path = Path(folder) / fname
    if not path.is_file():
        raise FileNotFoundError(f"dataset file missing: expected {path}")
    expected = {algo: spec.get(algo, {}).get(fname) for algo in ("md5", "sha256")}
    if not any(expected.values()):
        raise KeyError(f"no checksum recorded for {fname}")        # a registry bug, not a user error
    actual = file_digests(path)
    check_digests(str(path), expected, actual)
    return actual


def seeded_split(n_images: int, n_validation: int, n_test: int, split_seed: int) -> dict[str, np.ndarray]:
    """The seeded split of a set without an official one: ``perm = numpy.random.RandomState(split_seed).permutation(
    n_images)`` (the legacy generator, whose stream NumPy keeps fixed across versions); test = ``perm[:n_test]``,
    val = ``perm[n_test:n_test + n_validation]``, train = the rest, each sorted. Returns {"train", "val", "test":
    int64 source indices}, disjoint, covering range(n_images).

    Raises:
        ValueError: ``n_validation + n_test >= n_images`` (no training image left).
    """
    if n_validation + n_test >= n_images:
        raise ValueError(f"n_validation + n_test = {n_validation + n_test} leaves no training image of {n_images}")
    perm = np.random.RandomState(int(split_seed)).permutation(n_images).astype(np.int64)
    return {"train": np.sort(perm[n_test + n_validation:]), "val": np.sort(perm[n_test:n_test + n_validation]),
            "test": np.sort(perm[:n_test])}


def seeded_subset(idx: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """``idx`` when ``cap`` is None or at least its length, else ``cap`` of its entries: the first ``cap`` of
    ``numpy.random.RandomState(seed).permutation(len(idx))``, in their original (sorted) order."""
    if cap is None or cap >= len(idx):
        return idx
    return idx[np.sort(np.random.RandomState(seed).permutation(len(idx))[:cap])]


def first_n(x: np.ndarray, cap: int | None) -> np.ndarray:
    """The first ``cap`` entries of ``x`` (all when ``cap`` is None)."""
    return x if cap is None else x[:cap]


def index_sha256(idx: np.ndarray) -> str:
    """SHA-256 of an index array as little-endian int64 bytes (recorded in ``meta["split"]``)."""
    return hashlib.sha256(np.asarray(idx).astype("<i8").tobytes()).hexdigest()
