"""SVHN format 2, cropped digits (Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised Feature
Learning"; http://ufldl.stanford.edu/housenumbers/): MATLAB files with ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1)
in 1..10 (10: digit 0, stored as 0)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.data.common import (SPLIT_CAPS, DataIntegrityError, Prepared, index_sha256, resize_bilinear,
                                  seeded_split, seeded_subset)
from vaebench.data.fetch import verify_file
from vaebench.data.sources import DatasetSource, register_source
from vaebench.errors import one_line
from vaebench.registry import StrictConfig

HOST = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
N_TRAIN_FILE = 73257
CHUNK = 4096


class SvhnConfig(StrictConfig):
    """How SVHN is sized (32 or 28), split (a seeded validation draw from the official train set) and truncated."""

    image_size: Literal[32, 28] = Field(32, description=(
        "32: the official 32x32 pixels; 28: every image resized to 28x28 with Pillow's bilinear filter "
        "(Image.resize((28, 28), Image.Resampling.BILINEAR), what torchvision's Resize((28, 28)) does on a PIL "
        "image), as in the sigma-VAE paper's SVHN experiments (Rybkin et al. 2021)."))
    extra: bool = Field(False, description=(
        "Append the 531,131 images of extra_32x32.mat to the training split (the file is then required in the "
        "mirror; otherwise it is not read)."))
    n_validation: PositiveInt = Field(5000, lt=N_TRAIN_FILE, description=(
        "Images of the official training file held out as validation, drawn with split_seed."))
    split_seed: NonNegativeInt = Field(0, description=(
        "Seed of the validation draw, numpy RandomState(split_seed).permutation(73257)[:n_validation], and of the "
        "max_* subsets."))
    max_train: PositiveInt | None = Field(None, description="Keep a seeded subset of N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep a seeded subset of N validation images "
                                                                 "(null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep a seeded subset of N test images (null = all).")


def image_shape(settings: SvhnConfig) -> tuple[int, int, int]:
    """(C, H, W) of the prepared images: (3, 32, 32), or (3, 28, 28) with ``image_size: 28``."""
    return (3, settings.image_size, settings.image_size)


def _mat_count(path: Path) -> int:
    """N of the file's ``X`` (32, 32, 3, N), read from its header; DataIntegrityError names the file."""
    from scipy.io import whosmat

    try:
        variables = {v[0]: v[1] for v in whosmat(str(path))}
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError/TypeError/... on bad files
        raise DataIntegrityError(f"{path}: not a readable MATLAB file ({one_line(exc)})") from None
    shape = variables.get("X")
    if shape is None or len(shape) != 4 or tuple(shape[:3]) != (32, 32, 3):
        got = "absent" if shape is None else f"of shape {tuple(shape)}"
        raise DataIntegrityError(f"{path}: variable 'X' should be uint8 of shape (32, 32, 3, N), got {got}")
    return int(shape[3])


def _load_mat(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(``X`` uint8 (32, 32, 3, n), labels int64 (n,) 0..9) of one file; DataIntegrityError names the file:
    unreadable, a variable missing or malformed, labels not integers in 1..10."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # noqa: BLE001
        raise DataIntegrityError(f"{path}: not a readable MATLAB file ({one_line(exc)})") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != (32, 32, 3, n):
        got = "absent" if x is None else f"{getattr(x, 'dtype', '?')} of shape {getattr(x, 'shape', '?')}"
        raise DataIntegrityError(f"{path}: variable 'X' should be uint8 of shape (32, 32, 3, {n}), got {got}")
    if not isinstance(y, np.ndarray) or y.shape not in ((n, 1), (n,)) or not np.issubdtype(y.dtype, np.number):
        got = "absent" if y is None else f"{getattr(y, 'dtype', '?')} of shape {getattr(y, 'shape', '?')}"
        raise DataIntegrityError(f"{path}: variable 'y' should be numbers of shape ({n}, 1), got {got}")
    y = y.reshape(-1)
    labels = y.astype(np.int64)
    if len(y) and (not np.array_equal(labels, y) or labels.min() < 1 or labels.max() > 10):
        raise DataIntegrityError(f"{path}: labels of 'y' should be the integers 1..10 (10 = digit 0), got values "
                                 f"from {y.min()} to {y.max()}")
    labels[labels == 10] = 0
    return x, labels


def _fill(x: np.ndarray, labels: np.ndarray, local: np.ndarray, out_x: np.ndarray, out_y: np.ndarray,
          rows: np.ndarray, size: int) -> None:
    """``out_x[rows]`` = images ``x[:, :, :, local]`` as (n, C, size, size), ``out_y[rows]`` their labels."""
    for start in range(0, len(local), CHUNK):
        src, dst = local[start:start + CHUNK], rows[start:start + CHUNK]
        chunk = x[:, :, :, src]
        images = chunk.transpose(3, 0, 1, 2)
        out_x[dst] = (images if size == 32 else resize_bilinear(images, size)).transpose(0, 3, 1, 2)
        out_y[dst] = labels[src]


def prepare_svhn(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """Verify every needed file, then read and split: validation = a seeded draw of ``n_validation`` training-file
    images, train = the rest (then the extra file), test = the test file; ``max_*``: seeded subsets. Images
    (N, 3, S, S), S = ``image_size``; labels 0..9; ``source_index_<split>``.

    Raises:
        FileNotFoundError: a needed file is missing. DataIntegrityError: an MD5 mismatch or a malformed file.
        ValueError: ``n_validation`` not below the training file's size.
    """
    folder = Path(folder)
    roles = ["train", "test"] + (["extra"] if cfg["extra"] else [])
    sums = {FILES[r]: verify_file(source, folder, FILES[r])["sha256"] for r in roles}
    counts = {r: _mat_count(folder / FILES[r]) for r in roles}
    n_train_file, n_val, seed, size = counts["train"], cfg["n_validation"], cfg["split_seed"], cfg["image_size"]
    if n_val >= n_train_file:
        raise ValueError(f"n_validation={n_val} must be smaller than the official training set ({n_train_file})")
    drawn = seeded_split(n_train_file, n_val, 0, seed)
    train_src = drawn["train"]
    if cfg["extra"]:
        train_src = np.concatenate([train_src, n_train_file + np.arange(counts["extra"], dtype=np.int64)])
    index = {"train": train_src, "val": drawn["val"], "test": np.arange(counts["test"], dtype=np.int64)}
    index = {s: seeded_subset(idx, cfg[SPLIT_CAPS[s]], seed) for s, idx in index.items()}
    out = {s: (np.empty((len(idx), 3, size, size), np.uint8), np.empty(len(idx), np.int64)) for s, idx in index.items()}

    plan = {"train": [("train", index["train"] < n_train_file, 0), ("val", np.ones(len(index["val"]), bool), 0)],
            "extra": [("train", index["train"] >= n_train_file, n_train_file)],
            "test": [("test", np.ones(len(index["test"]), bool), 0)]}
    for role in roles:
        x, labels = _load_mat(folder / FILES[role], counts[role])
        for split, mask, offset in plan[role]:
            rows = np.flatnonzero(mask)
            _fill(x, labels, index[split][rows] - offset, *out[split], rows, size)
        del x, labels

    rule = (f"perm = numpy.random.RandomState({seed}).permutation({n_train_file}) over {FILES['train']}: "
            f"validation = perm[:{n_val}], train = the other {n_train_file - n_val}, each sorted"
            + (f", followed by the {counts['extra']} images of {FILES['extra']}" if cfg["extra"] else "")
            + f"; test = {FILES['test']}")
    split_meta = {
        "description": (f"{rule}; then max_* keeps a seeded subset of N of a split: the first N of numpy.random."
                        f"RandomState({seed}).permutation(n) over its images, kept in order. source_index_train "
                        f"indexes the images of {FILES['train']}" + (f" followed by those of {FILES['extra']} "
                        f"(extra image j = {n_train_file} + j)" if cfg["extra"] else "") +
                        f", source_index_val {FILES['train']}, source_index_test {FILES['test']}. Labels 1..10 of "
                        "the files with 10 (digit 0) mapped to 0"),
        "rule": "numpy.random.RandomState(seed).permutation(n_train_file): validation first, train the rest",
        "seed": seed,
        "n_source_images": {FILES[r]: counts[r] for r in roles},
        "index_sha256": {s: index_sha256(idx) for s, idx in index.items()},
    }
    more = {"preprocessing": ("none: the official 32x32 pixels" if size == 32 else
                              "each 32x32 image resized to 28x28 with Pillow: Image.resize((28, 28), "
                              "Image.Resampling.BILINEAR)")}
    return Prepared(out, split_meta, sums, extra={f"source_index_{s}": idx for s, idx in index.items()},
                    more_meta=more)


SOURCE = register_source(DatasetSource(
    name="svhn",
    config=SvhnConfig,
    reader=prepare_svhn,
    citation=('Netzer, Wang, Coates, Bissacco, Wu & Ng 2011, "Reading Digits in Natural Images with Unsupervised '
              'Feature Learning"; http://ufldl.stanford.edu/housenumbers/'),
    mirror_subdir="svhn",
    files=dict(FILES),
    optional_files={FILES["extra"]: "extra"},
    urls={f: HOST + f for f in FILES.values()},
    md5={"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
         "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
         "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7"},
    image_shape=(3, 32, 32),
    image_shape_of=image_shape,
    n_classes=10,
))
