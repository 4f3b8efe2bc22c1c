"""Dataset preparation: fetch, verify, split and store image datasets as one ``.npz`` per dataset.

Pipeline contract
-----------------
``prepare_dataset`` reads the four original IDX files of a dataset (from a local mirror folder or
via torchvision's downloader), checks the SHA-256 of their *decompressed* bytes against sums recorded
in ``DATASETS``, splits them and writes one file atomically::

    x_train, x_val, x_test   uint8   (N, C, H, W)   pixel values 0..255
    y_train, y_val, y_test   int64   (N,)           class labels
    meta                     str     JSON: dataset, source, split, sha256 per file, counts, image_shape

Split (fixed, documented in ``meta``): validation = the LAST ``n_validation`` images of the official
training set, train = the images before them, test = the official test set; then ``max_*`` keeps the
first N images of a split (for quick runs).

Reading the file back and batching by index: :mod:`vaebench.data.prepared`.

IDX format (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): 2 zero bytes, 1 type byte, 1 byte
giving the number of dimensions ``k``, ``k`` big-endian int32 sizes, then the data in C order.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.atomic import atomic_path
from vaebench.errors import StageError
from vaebench.registry import StrictConfig


class DataIntegrityError(StageError):
    """A dataset file's content does not match its recorded checksum (or is not valid IDX)."""


# -----------------------------------------------------------------------------
# Registry. Each IDX dataset names its four files (by role), the SHA-256 of each DECOMPRESSED file,
# the folder name inside a mirror, and the torchvision class that can download it. Fashion-MNIST
# (torchvision class "FashionMNIST") uses the same file names and format: add an entry with its sums.

DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "format": "idx",
        "mirror_subdir": "mnist",
        "torchvision_class": "MNIST",
        "files": {
            "train_images": "train-images-idx3-ubyte",
            "train_labels": "train-labels-idx1-ubyte",
            "test_images": "t10k-images-idx3-ubyte",
            "test_labels": "t10k-labels-idx1-ubyte",
        },
        # SHA-256 of the decompressed official files (also listed in the offline mirror's README).
        "sha256": {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        "n_classes": 10,
    },
}



class DatasetConfig(StrictConfig):
    """How a dataset is split and (for quick runs) truncated."""

    n_validation: PositiveInt = Field(10000, description="The last N official training images, held out as validation.")
    max_train: PositiveInt | None = Field(None, description="Keep the first N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep the first N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test images (null = all).")

# IDX type byte -> numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# -----------------------------------------------------------------------------
# Reading and verifying raw files

def parse_idx(buf: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (decompressed) IDX file into a numpy array.

    Args:
        buf: the whole file content.
        name: file name used in error messages.
    Returns:
        array of the shape stored in the header, native byte order (uint8 for MNIST images/labels).
    Raises:
        DataIntegrityError: bad magic number, unknown type byte, or size not matching the header.
    """
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise DataIntegrityError(f"{name}: not an IDX file (bad magic number {buf[:4].hex()!r})")
    type_byte, ndim = buf[2], buf[3]
    if type_byte not in _IDX_DTYPES:
        raise DataIntegrityError(f"{name}: unknown IDX type byte 0x{type_byte:02x}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataIntegrityError(f"{name}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">i4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_byte]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        raise DataIntegrityError(f"{name}: {len(buf)} bytes, header {shape} implies {expected}")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _read_maybe_gz(path: Path) -> bytes:
    """Return the decompressed bytes of ``path`` (gunzipped if the name ends with ``.gz``)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def _find_file(folder: Path, name: str) -> Path:
    """Locate ``name`` or ``name.gz`` in ``folder`` (gzipped preferred); FileNotFoundError names both."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"dataset file missing: expected {folder / name}.gz or {folder / name}")


def _resolve_source(name: str, spec: dict, mirror: str | os.PathLike | None, raw_dir: str | os.PathLike
                    ) -> tuple[Path, str]:
    """Return (folder holding the raw IDX files, human-readable source) for dataset ``name``.

    With ``mirror``: ``<mirror>/<mirror_subdir>/``. Without: download with torchvision into
    ``<raw_dir>/<TorchvisionClass>/raw/`` (torchvision leaves the decompressed files there).
    """
    if mirror is not None:
        folder = Path(mirror) / spec["mirror_subdir"]
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset mirror folder missing for {name!r}: expected {folder} "
                                    f"(mirror root {mirror!r}, e.g. set VAEBENCH_DATA_MIRROR)")
        return folder, str(folder.resolve())
    import torchvision.datasets  # lazy: importing torchvision takes seconds

    cls = getattr(torchvision.datasets, spec["torchvision_class"])
    cls(root=str(raw_dir), train=True, download=True)  # downloads all four files, checks gz MD5s
    folder = Path(raw_dir) / spec["torchvision_class"] / "raw"
    return folder, " ".join(cls.mirrors[0] + f + ".gz" for f in spec["files"].values())


def read_idx_files(name: str, folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and verify the four IDX files of dataset ``name`` from ``folder``.

    Every file is checked before anything is returned, so a caller writes nothing on failure.

    Returns:
        (arrays by role: ``train_images`` (N,H,W) uint8, ``train_labels`` (N,) uint8, ``test_*``;
         SHA-256 hex digest of each decompressed file by file name)
    Raises:
        KeyError: unknown dataset name.
        FileNotFoundError: a file is missing (message names the expected path).
        DataIntegrityError: a SHA-256 mismatch (names file, expected and actual sum) or bad IDX data.
    """
    spec = _spec(name)
    folder = Path(folder)
    arrays, sums = {}, {}
    for role, fname in spec["files"].items():
        path = _find_file(folder, fname)
        buf = _read_maybe_gz(path)
        actual = hashlib.sha256(buf).hexdigest()
        expected = spec["sha256"][fname]
        if actual != expected:
            raise DataIntegrityError(f"SHA-256 mismatch for {path} (decompressed {fname}): "
                                     f"expected {expected}, got {actual}")
        arrays[role] = parse_idx(buf, str(path))
        sums[fname] = actual
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataIntegrityError(f"{name}: {n_img} {split} images but {n_lab} labels in {folder}")
    return arrays, sums


def _spec(name: str) -> dict:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


# -----------------------------------------------------------------------------
# Preparation

def prepare_dataset(name: str, cfg: DatasetConfig | dict | None, out_path: str | os.PathLike,
                    mirror: str | os.PathLike | None = None, raw_dir: str | os.PathLike = "data/raw") -> dict:
    """Fetch, verify, split and save dataset ``name`` as one ``.npz`` (written atomically).

    Args:
        name: registry key in ``DATASETS`` (e.g. ``"mnist"``).
        cfg: the dataset's settings (``max_*`` keeps the first N of a split); a dict is validated into a
            DatasetConfig; None = the defaults.
        out_path: destination ``.npz`` (see the module docstring for its arrays).
        mirror: root of an offline mirror holding ``<mirror>/<name>/<idx files>[.gz]``; ``None``
            downloads with torchvision into ``raw_dir``.
        raw_dir: torchvision download root (used only when ``mirror`` is None).
    Returns:
        summary dict: ``dataset``, ``out_path``, ``source``, ``counts`` {train, val, test},
        ``image_shape`` [C, H, W], ``sha256`` {file: digest}.
    Raises:
        KeyError (unknown dataset), ValueError (an invalid setting, named; n_validation too large),
        FileNotFoundError (mirror folder/file missing), DataIntegrityError (checksum mismatch).
        On any error no output file is written.
    """
    spec = _spec(name)
    cfg = (cfg if isinstance(cfg, DatasetConfig) else DatasetConfig.model_validate(cfg or {})).model_dump()
    folder, source = _resolve_source(name, spec, mirror, raw_dir)
    arrays, sums = read_idx_files(name, folder)

    x_full, y_full = arrays["train_images"], arrays["train_labels"]
    n_full, n_val = len(x_full), cfg["n_validation"]
    if n_val >= n_full:
        raise ValueError(f"n_validation={n_val} must be smaller than the official training set ({n_full})")
    n_train = n_full - n_val

    def as_nchw(x: np.ndarray) -> np.ndarray:  # (N,H,W) grey -> (N,1,H,W); (N,H,W,C) -> (N,C,H,W)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.uint8)

    def first(x: np.ndarray, key: str) -> np.ndarray:
        return x if cfg[key] is None else x[: cfg[key]]

    splits = {
        "train": (first(x_full[:n_train], "max_train"), first(y_full[:n_train], "max_train")),
        "val": (first(x_full[n_train:], "max_validation"), first(y_full[n_train:], "max_validation")),
        "test": (first(arrays["test_images"], "max_test"), first(arrays["test_labels"], "max_test")),
    }
    out = {}
    for split, (x, y) in splits.items():
        out[f"x_{split}"] = as_nchw(x)
        out[f"y_{split}"] = y.astype(np.int64)
    counts = {split: int(len(out[f"y_{split}"])) for split in splits}
    image_shape = list(out["x_train"].shape[1:])

    meta = {
        "dataset": name,
        "source": source,
        "sha256": sums,
        "counts": counts,
        "image_shape": image_shape,
        "n_classes": spec.get("n_classes"),
        "dtype": "uint8 (0..255), layout N,C,H,W; labels int64",
        "split": {
            "description": (f"validation = the last {n_val} images of the official training set "
                            f"(indices {n_train}..{n_full - 1}); train = the first {n_train}; "
                            f"test = the official test set; then max_* keeps the first N of a split"),
            "train_source_indices": [0, counts["train"]],
            "val_source_indices": [n_train, n_train + counts["val"]],
            "test_source_indices": [0, counts["test"]],
        },
        "config": cfg,
    }
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"dataset": name, "out_path": str(out_path), "source": source, "counts": counts,
            "image_shape": image_shape, "sha256": sums}
