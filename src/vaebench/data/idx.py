"""The IDX format (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/) and the MNIST-style fixed split, shared by
:mod:`~vaebench.data.mnist` and :mod:`~vaebench.data.fashion_mnist`."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from pydantic import Field, PositiveInt

from vaebench.data.common import DataIntegrityError, Prepared, first_n, resize_bilinear
from vaebench.data.fetch import check_digests, find_file, gunzip, read_maybe_gz
from vaebench.data.sources import DatasetSource
from vaebench.registry import StrictConfig


class DatasetConfig(StrictConfig):
    """How MNIST or Fashion-MNIST is sized, split (the last n_validation training images: validation) and
    truncated."""

    image_size: PositiveInt = Field(28, ge=8, description=(
        "Height = width of the prepared images: 28 keeps the official pixels; another size resizes every image "
        "with Pillow's bilinear filter (what torchvision's Resize does on a PIL image), as the rho-VAE paper's "
        "64x64 \"beta-VAE\" network needs (Ferdowsi & Sarwar 2019, Fig. 3)."))

    n_validation: PositiveInt = Field(10000, description="The last N official training images, held out as validation.")
    max_train: PositiveInt | None = Field(None, description="Keep the first N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep the first N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test images (null = all).")


# The four files of an IDX dataset (MNIST, Fashion-MNIST), by role, as LeCun et al. name them.
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(buf: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array (header's shape, native byte order) of one decompressed IDX file; DataIntegrityError names
    ``name``: bad magic number, unknown type byte, or a size not matching the header."""
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


def read_idx_files(source: DatasetSource, folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Verify and read the four IDX files of ``source`` in ``folder``, every one before returning.

    Returns:
        ({"train_images": (N, H, W) uint8, "train_labels": (N,) uint8, "test_images", "test_labels"},
        {file: SHA-256}: of the decompressed bytes when ``gz_optional``, else of the file as stored).
    Raises:
        FileNotFoundError: a file is missing (also says when a ``.gz`` file is there only decompressed).
        DataIntegrityError: a checksum mismatch, bad gzip or IDX data, image and label counts that differ.
    """
    folder = Path(folder)
    arrays, sums = {}, {}
    for role, fname in source.files.items():
        if source.gz_optional:
            path = find_file(folder, fname)
            buf = read_maybe_gz(path)
            actual = hashlib.sha256(buf).hexdigest()
            expected = source.sha256[fname]
            if actual != expected:
                raise DataIntegrityError(f"SHA-256 mismatch for {path} (decompressed {fname}): "
                                         f"expected {expected}, got {actual}")
        else:
            path = folder / fname
            if not path.is_file():
                plain = folder / fname.removesuffix(".gz")
                raise FileNotFoundError(f"dataset file missing: expected {path}" + (
                    f" ({plain.name} is there decompressed, which cannot be verified: the official checksums are "
                    "those of the gzipped files as distributed)" if plain != path and plain.exists() else ""))
            raw = path.read_bytes()
            digests = {"md5": hashlib.md5(raw).hexdigest(), "sha256": hashlib.sha256(raw).hexdigest()}
            check_digests(str(path), {"md5": source.md5.get(fname), "sha256": source.sha256.get(fname)}, digests)
            buf = gunzip(raw, path) if fname.endswith(".gz") else raw
            actual = digests["sha256"]
        arrays[role] = parse_idx(buf, str(path))
        sums[fname] = actual
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataIntegrityError(f"{source.name}: {n_img} {split} images but {n_lab} labels in {folder}")
    return arrays, sums


def image_shape(settings: DatasetConfig) -> tuple[int, int, int]:
    """(C, H, W) of the prepared images: (1, image_size, image_size)."""
    return (1, settings.image_size, settings.image_size)


def prepare_idx(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """The fixed split: validation = the last ``n_validation`` official training images, train = the ones before,
    test = the official test set; then ``max_*`` keeps the first N, and ``image_size`` other than 28 resizes
    (:func:`~vaebench.data.common.resize_bilinear`). Images (N, S, S), S = ``image_size``.

    Raises:
        see :func:`read_idx_files`; ValueError: ``n_validation`` not below the training set size.
    """
    arrays, sums = read_idx_files(source, folder)
    x_full, y_full = arrays["train_images"], arrays["train_labels"]
    n_full, n_val = len(x_full), cfg["n_validation"]
    if n_val >= n_full:
        raise ValueError(f"n_validation={n_val} must be smaller than the official training set ({n_full})")
    n_train = n_full - n_val

    size = cfg["image_size"]

    def first(x, key):
        return first_n(x, cfg[key])

    def images(x, key):
        x = first(x, key)
        return x if x.shape[1:] == (size, size) else resize_bilinear(x, size)

    splits = {
        "train": (images(x_full[:n_train], "max_train"), first(y_full[:n_train], "max_train")),
        "val": (images(x_full[n_train:], "max_validation"), first(y_full[n_train:], "max_validation")),
        "test": (images(arrays["test_images"], "max_test"), first(arrays["test_labels"], "max_test")),
    }
    counts = {k: len(v[0]) for k, v in splits.items()}
    split_meta = {
        "description": (f"validation = the last {n_val} images of the official training set "
                        f"(indices {n_train}..{n_full - 1}); train = the first {n_train}; "
                        f"test = the official test set; then max_* keeps the first N of a split"
                        + (f"; each image resized to {size}x{size} with Pillow's bilinear filter" if size != 28
                           else "")),
        "train_source_indices": [0, counts["train"]],
        "val_source_indices": [n_train, n_train + counts["val"]],
        "test_source_indices": [0, counts["test"]],
    }
    more = {"classes": list(source.classes)} if source.classes is not None else {}
    return Prepared(splits, split_meta, sums, more_meta=more)
