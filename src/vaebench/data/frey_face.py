"""Frey Face (Brendan Frey's face images, ``frey_rawface.mat`` from Sam Roweis' data page
https://cs.nyu.edu/~roweis/data.html; used by Kingma & Welling 2014, "Auto-Encoding Variational Bayes"):
one MATLAB 5.0 file, variable ``ff`` uint8 (560, 1965), image i = ``ff[:, i].reshape(28, 20)``; unlabelled."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from vaebench.data.common import SPLIT_CAPS, DataIntegrityError, Prepared, first_n, index_sha256, seeded_split
from vaebench.data.fetch import check_digests
from vaebench.data.sources import DatasetSource, register_source
from vaebench.registry import StrictConfig

FREY_N_IMAGES = 1965
MAT_FILE = "frey_rawface.mat"
MAT_VARIABLE = "ff"


class FreyFaceConfig(StrictConfig):
    """How Frey Face (1,965 images, no official split) is split with a seed and (for quick runs) truncated."""

    n_validation: PositiveInt = Field(200, description="Images held out as validation (drawn with split_seed).")
    n_test: PositiveInt = Field(200, description="Images held out as the test split (drawn with split_seed).")
    split_seed: NonNegativeInt = Field(0, description="Seed of the random split: numpy RandomState(split_seed)."
                                                      "permutation(1965); test first, then validation.")
    max_train: PositiveInt | None = Field(None, description="Keep the first N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep the first N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test images (null = all).")

    @model_validator(mode="after")
    def _leaves_training_images(self):
        if self.n_validation + self.n_test >= FREY_N_IMAGES:
            raise ValueError(f"n_validation + n_test = {self.n_validation} + {self.n_test} leaves no training "
                             f"image (Frey Face has {FREY_N_IMAGES})")
        return self


def read_mat_file(source: DatasetSource, folder: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Verify (MD5 and SHA-256) and read ``frey_rawface.mat`` in ``folder``.

    Returns:
        (images uint8 (1965, 28, 20) in column order, {file: SHA-256}).
    Raises:
        FileNotFoundError: the file is missing.
        DataIntegrityError: a checksum mismatch, an unreadable file, ``ff`` absent or of another shape or dtype.
    """
    from scipy.io import loadmat

    (fname,) = source.files.values()
    path = Path(folder) / fname
    if not path.is_file():
        raise FileNotFoundError(f"dataset file missing: expected {path}")
    buf = path.read_bytes()
    actual = {"md5": hashlib.md5(buf).hexdigest(), "sha256": hashlib.sha256(buf).hexdigest()}
    check_digests(str(path), {"md5": source.md5[fname], "sha256": source.sha256[fname]}, actual)
    _, h, w = source.image_shape
    try:
        mat = loadmat(io.BytesIO(buf))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError/TypeError/... on bad files
        raise DataIntegrityError(f"{path}: not a readable MATLAB file: {exc}") from None
    ff = mat.get(MAT_VARIABLE)
    want = (h * w, FREY_N_IMAGES)
    if not isinstance(ff, np.ndarray) or ff.shape != want or ff.dtype != np.uint8:
        got = "absent" if ff is None else f"{getattr(ff, 'shape', '?')} {getattr(ff, 'dtype', '?')}"
        raise DataIntegrityError(f"{path}: variable {MAT_VARIABLE!r} should be uint8 of shape {want}, got {got}")
    images = np.ascontiguousarray(ff.T).reshape(-1, h, w)
    return images, {fname: actual["sha256"]}


def prepare_frey_face(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """The seeded split (:func:`~vaebench.data.common.seeded_split`), then ``max_*`` keeps the first N.
    Images (N, 28, 20), labels -1, ``source_index_<split>``: column indices of ``ff``."""
    images, sums = read_mat_file(source, folder)
    index = seeded_split(len(images), cfg["n_validation"], cfg["n_test"], cfg["split_seed"])
    index = {split: first_n(idx, cfg[SPLIT_CAPS[split]]) for split, idx in index.items()}
    splits = {split: (images[idx], np.full(len(idx), -1, dtype=np.int64)) for split, idx in index.items()}
    n = len(images)
    split_meta = {
        "description": (f"no official split: perm = numpy.random.RandomState({cfg['split_seed']}).permutation({n}); "
                        f"test = perm[:{cfg['n_test']}], validation = perm[{cfg['n_test']}:"
                        f"{cfg['n_test'] + cfg['n_validation']}], train = the other "
                        f"{n - cfg['n_test'] - cfg['n_validation']}, each sorted by column index of "
                        f"'{MAT_VARIABLE}'; then max_* keeps the first N of a split. The column indices "
                        "are stored in the arrays source_index_train / source_index_val / source_index_test"),
        "seed": cfg["split_seed"],
        "rule": "numpy.random.RandomState(seed).permutation(n): test, validation, train",
        "n_source_images": n,
        "index_sha256": {split: index_sha256(idx) for split, idx in index.items()},
    }
    return Prepared(splits, split_meta, sums, extra={f"source_index_{split}": idx for split, idx in index.items()})


SOURCE = register_source(DatasetSource(
    name="frey_face",
    config=FreyFaceConfig,
    reader=prepare_frey_face,
    citation=("Brendan Frey's face images, from Sam Roweis' data page https://cs.nyu.edu/~roweis/data.html; "
              'used by Kingma & Welling 2014, "Auto-Encoding Variational Bayes"'),
    mirror_subdir="frey_face",
    urls={MAT_FILE: "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"},
    files={"images": MAT_FILE},
    md5={MAT_FILE: "5aeb024d42b8a6091f30e5eb18c8a48d"},
    sha256={MAT_FILE: "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"},
    image_shape=(1, 28, 20),
    n_classes=None,
))
