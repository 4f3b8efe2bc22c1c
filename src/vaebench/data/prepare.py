"""Dataset preparation: fetch, verify, split and store image datasets as one ``.npz`` per dataset.

Pipeline contract
-----------------
``prepare_dataset`` reads the original distribution files of a dataset (from a local mirror folder or
downloaded from the official host), checks their checksums against the sums recorded in ``DATASETS``
(nothing is written on a mismatch), splits them and writes one file atomically::

    x_train, x_val, x_test   uint8   (N, C, H, W)   pixel values 0..255
    y_train, y_val, y_test   int64   (N,)           class labels; -1 for every image of an unlabelled dataset
    meta                     str     JSON: dataset, source, split, sha256 per file, counts, image_shape,
                                     n_classes (null: unlabelled), labelled; some datasets add classes
                                     (class names), preprocessing (a resize or crop applied)
    source_index_train, source_index_val, source_index_test   int64 (N,)   (seeded or listed splits: Frey Face,
                                     SVHN, CelebA, image folders) each image's index in its source (Frey Face:
                                     its column in the original ``ff`` matrix): the stored split

Datasets (registry :data:`DATASETS`; the study's ``datasets`` section takes each one's own settings class,
:data:`DATASET_CONFIGS`). Every file is checked against the checksums recorded here before it is parsed; a mismatch
or a malformed file raises :class:`DataIntegrityError` naming the file, and nothing is written.

* ``mnist`` (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): the four IDX files; SHA-256 of the
  *decompressed* bytes. Split (fixed, documented in ``meta``): validation = the LAST ``n_validation`` images
  of the official training set, train = the images before them, test = the official test set; then
  ``max_*`` keeps the first N images of a split (for quick runs). IDX format: 2 zero bytes, 1 type byte,
  1 byte giving the number of dimensions ``k``, ``k`` big-endian int32 sizes, then the data in C order.
* ``fashion_mnist`` (Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
  Learning Algorithms", arXiv:1708.07747; http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/): the same four
  IDX file names and format as MNIST (28 x 28 grey, 10 classes, names in ``meta["classes"]``), distributed gzipped;
  the official sums are the MD5s of the ``.gz`` files (Fashion-MNIST README, torchvision's ``FashionMNIST``), so the
  mirror must hold the ``.gz`` files as distributed (an uncompressed copy cannot be verified and is refused). Split
  exactly like ``mnist`` (default ``n_validation`` 10,000).
* ``frey_face`` (Brendan Frey's face images, distributed as ``frey_rawface.mat`` from Sam Roweis' data page
  https://cs.nyu.edu/~roweis/data.html; used by Kingma & Welling 2014, "Auto-Encoding Variational Bayes"):
  one MATLAB 5.0 file, variable ``ff`` of shape (560, 1965) uint8, each column one grey 28 x 20 (rows x
  columns) face stored row-major, so image i is ``ff[:, i].reshape(28, 20)``. No labels (``y_*`` = -1, no
  FID classifier) and no official split. Split (seeded, stored): ``perm =
  numpy.random.RandomState(split_seed).permutation(1965)`` (the legacy generator, whose stream NumPy keeps
  fixed across versions); test = ``perm[:n_test]``, validation = ``perm[n_test:n_test + n_validation]``,
  train = the rest, each sorted by column index; defaults 1,565 / 200 / 200 with split_seed 0. Then
  ``max_*`` keeps the first N of a split. The column indices are stored in the file
  (``source_index_*``) and the rule, seed and counts in ``meta["split"]``. Both the file's MD5 (the sum of
  the official URL) and its SHA-256 are checked.
* ``cifar10`` (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images";
  https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz; :mod:`vaebench.data.cifar10`): the archive
  ``cifar-10-python.tar.gz`` (its MD5 and every member's MD5 checked), read member by member without extracting;
  ``data_batch_1..5`` and ``test_batch`` are Python 2 pickles of {data: (10000, 3072) uint8 (1024 R, 1024 G, 1024 B
  values, each 32 x 32 row-major), labels: 10,000 ints}, unpickled only after their checksum passes and only with a
  restricted unpickler (numpy's array reconstruction; any other global is refused). 32 x 32 RGB, 10 classes (names
  from ``batches.meta`` in ``meta["classes"]``). Split: validation = the last ``n_validation`` (default 5,000) of
  the 50,000 training images in batch order, test = ``test_batch``; ``max_*`` keeps the first N.
* ``svhn`` (Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised Feature Learning";
  http://ufldl.stanford.edu/housenumbers/; :mod:`vaebench.data.svhn`): ``train_32x32.mat``, ``test_32x32.mat`` and,
  only with ``extra: true`` (appended to train), ``extra_32x32.mat``; MD5 of each file. ``X`` (32, 32, 3, N) uint8
  (row, column, channel, image), ``y`` (N, 1) with 1..10, 10 = digit 0, mapped to 0. ``image_size`` 32 (the
  official pixels) or 28 (Pillow ``resize((28, 28), BILINEAR)`` per image, the sigma-VAE paper's size). Split:
  validation = a seeded draw of ``n_validation`` (default 5,000) images of the official train file (``RandomState(
  split_seed).permutation``), test = the official test file; ``max_*`` keeps a seeded subset; ``source_index_*``
  stored.
* ``celeba`` (Liu et al. 2015, "Deep Learning Face Attributes in the Wild";
  http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; :mod:`vaebench.data.celeba`): ``img_align_celeba.zip`` (202,599
  JPEGs, 178 x 218) and ``list_eval_partition.txt`` (the official split, 0 / 1 / 2 = train / validation / test);
  MD5 of both. Unlabelled (``y_*`` = -1, no FID classifier). Centre crop ``crop`` (default 148) then a Pillow
  bilinear resize to ``image_size`` (64 or 32), as torchvision's ``CenterCrop(148)``, ``Resize(64)``; ``max_*``
  keeps a seeded subset; ``source_index_*`` stored. Never downloaded: Google Drive refuses automated downloads,
  so without a mirror the preparation stops with instructions (:class:`DatasetDownloadError`).

Mirror: ``<mirror>/<mirror_subdir>/<official file names>`` (:func:`mirror_layout`); without a mirror the files are
downloaded from the official hosts into ``raw_dir`` (MNIST through torchvision, the others from the URLs recorded
here); a failed download leaves nothing behind (no partial file, no folder it created) and raises one
:class:`DatasetDownloadError` naming the dataset, the URLs tried, the files expected and the mirror layout.

A new registered dataset is one module of this package (its settings class, its reader returning
:class:`~vaebench.data.common.Prepared`, its ``ENTRY``) plus one line in :data:`DATASETS`; the entry's keys are
described above :data:`DATASETS`.

Any other dataset name with ``kind: image_folder`` is a folder of the user's own PNG / JPEG images, or a
``.tar`` / ``.tar.gz`` / ``.tgz`` of one (:class:`ImageFolderConfig`, :func:`dataset_spec`): its ``path`` is the
source (no mirror, no download). Layouts: ``split: folders``: ``train/[<class>/]*.{png,jpg,jpeg}`` and
``test/[<class>/]*.{png,jpg,jpeg}``, validation = a seeded draw of ``n_validation`` training images; ``split:
random``: ``*.ext`` or ``<class>/*.ext``, split with ``split_seed`` into test, validation and train. Labels = the
index of the class folder in the sorted class names (stored in ``meta["classes"]``), -1 without class folders.
Paths are sorted, so the result is deterministic; ``sha256`` records the archive's SHA-256, or for a folder the
SHA-256 of its sorted listing of (relative path, SHA-256) over the image files. Files without an image extension
are ignored; every file with one must be an image of the configured size (or ``resize: center_crop_resize``),
else :class:`ImageFolderError` names it.

Reading the file back and batching by index: :mod:`vaebench.data.prepared`.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from vaebench.atomic import atomic_path
from vaebench.data import celeba, cifar10, svhn
# the errors and Prepared are defined in common (shared with the dataset modules) and re-exported from here
from vaebench.data.common import (SPLIT_CAPS, DataIntegrityError, DatasetDownloadError, MirrorError,  # noqa: F401
                                  Prepared, check_digests, first_n, index_sha256, seeded_split, seeded_subset)
from vaebench.errors import StageError, one_line
from vaebench import registry
from vaebench.registry import StrictConfig

class ImageFolderError(StageError):
    """A user's image folder (or ``.tar`` / ``.tar.gz`` / ``.tgz`` of one; dataset kind ``image_folder``) cannot
    be prepared: the path is missing, a file with an image extension is not a readable image (not an image,
    corrupt, truncated), an image has the wrong size (``resize: error``), an image lies outside the layout, a
    split is empty or too small for ``n_validation`` / ``n_test``, or the archive is unreadable. The one-line
    message names the file (its path inside the folder or archive) and what is wrong."""


# -----------------------------------------------------------------------------
# Per-dataset settings (the study's ``datasets.<name>`` section)

class DatasetConfig(StrictConfig):
    """How MNIST or Fashion-MNIST is split (the last n_validation training images: validation) and truncated."""

    n_validation: PositiveInt = Field(10000, description="The last N official training images, held out as validation.")
    max_train: PositiveInt | None = Field(None, description="Keep the first N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep the first N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test images (null = all).")


MnistConfig = DatasetConfig

FREY_N_IMAGES = 1965


# Frey Face defaults: 200 test and 200 validation images (about 10% each): the test split gives a mean NLL whose
# standard error is ~7% of the per-image spread (1/sqrt(200)) and the validation curve is as precise, while 1,565
# images (80%) are left for training. The faces are frames of one video, so neighbouring frames are near
# duplicates: a random split measures fit to this sequence, not generalisation to new faces.
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


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")     # matched case-insensitively
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _is_tar_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


class ImageFolderConfig(StrictConfig):
    """A folder of your own images (PNG / JPEG), or a .tar / .tar.gz / .tgz of one (dataset kind image_folder)."""

    kind: Literal["image_folder"] = Field(..., description="The dataset kind: a folder of the user's own images "
                                                           "(any dataset name that is not a registered dataset).")
    path: str = Field(..., min_length=1, description=(
        "The folder, or a .tar / .tar.gz / .tgz archive of it (read member by member, never extracted), relative "
        "to the repository root (the working directory of every stage) or absolute. It is the source itself: the "
        "data mirror ($VAEBENCH_DATA_MIRROR / --mirror) is not used."))
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(..., description=(
        "Image height = width after resizing (an integer), or [height, width]; other sizes: see resize."))
    channels: Literal[1, 3] = Field(..., description='1: converted to grey (Pillow mode "L"); 3: RGB (an alpha '
                                                     'channel is dropped).')
    resize: Literal["error", "center_crop_resize"] = Field("error", description=(
        "An image of another size: error (the file is named) or center_crop_resize (crop the centre to the "
        "aspect ratio of image_size, then resize with bicubic interpolation)."))
    split: Literal["folders", "random"] = Field("folders", description=(
        "folders: <root>/train/ and <root>/test/ (each [<class>/]*.png|jpg|jpeg), validation = a seeded draw of "
        "n_validation training images; random: a flat (*.png) or class-folder (<class>/*.png) tree split with "
        "split_seed into test (n_test), validation (n_validation) and train (the rest)."))
    n_validation: PositiveInt = Field(1000, description="Images held out as validation, drawn with split_seed "
                                                        "(from train/ with split: folders).")
    n_test: PositiveInt = Field(1000, description="Images held out as the test split (split: random only; with "
                                                  "split: folders the test split is the test/ folder).")
    split_seed: NonNegativeInt = Field(0, description="Seed of the draw: numpy RandomState(split_seed).permutation("
                                                      "n) over the sorted paths; test first, then validation.")
    max_train: PositiveInt | None = Field(None, description="Keep a seeded subset of N training images (null = all): the first N of RandomState(split_seed).permutation, so every class stays represented.")
    max_validation: PositiveInt | None = Field(None, description="Keep a seeded subset of N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep a seeded subset of N test images (null = all).")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str) -> str:
        """The path must exist now (relative to the working directory, the repository root) and be a folder or a
        tar archive; the value is kept as written (so the study's params do not change with the checkout)."""
        p = Path(value)
        where = "" if p.is_absolute() else f" (relative to the repository root {Path.cwd()})"
        if not p.exists():
            raise ValueError(f"no such folder or archive: {p.absolute()}{where}")
        if not (p.is_dir() or (p.is_file() and _is_tar_name(p))):
            raise ValueError(f"{p.absolute()} is neither a folder nor a {' / '.join(TAR_SUFFIXES)} archive")
        return value

    @model_validator(mode="after")
    def _n_test_only_for_random(self):
        if self.split == "folders" and "n_test" in self.model_fields_set:
            raise ValueError("n_test is only for split: random (with split: folders the test split is the test/ "
                             "folder); remove it or set split: random")
        return self

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) of the prepared images."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)


# -----------------------------------------------------------------------------
# Registry: one entry per dataset. Keys:
#   format          "idx" (MNIST-like), "mat" (Frey Face) or the name of a module's own format
#   prepare         (modules) the reader: prepare(name, spec, cfg: dict, folder: Path) -> Prepared, images N,C,H,W;
#                   without it, prepare_dataset dispatches on format (_split_idx, _split_mat)
#   mirror_subdir   the dataset's folder in an offline mirror (and in raw_dir when downloaded)
#   files           {role: file name as distributed}: what the mirror holds, what a download fetches
#   optional_files  {file: setting}: a file needed only when that (bool) setting is true (SVHN's extra set)
#   md5, sha256     {file: hex digest} recorded sums, checked before the file is parsed (at least one per file)
#   urls            {file: official URL}, downloaded by _download_files; or torchvision_class (MNIST, downloaded by
#                   torchvision); or download_refusal(layout) -> message (CelebA: never downloaded)
#   gz_optional     (MNIST) each file may be stored as <file> or <file>.gz; its SHA-256 is of the decompressed bytes
#   image_shape     (C, H, W) with the default settings; image_shape_of(settings) -> (C, H, W) when it depends on them
#   n_classes       number of classes, None for an unlabelled dataset; classes: their names (meta["classes"])
#   config          the settings class (the study's datasets.<name>)
#   citation        the source paper and page

FASHION_HOST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
                  "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}

DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "format": "idx",
        "citation": "LeCun & Cortes, MNIST handwritten digit database, http://yann.lecun.com/exdb/mnist/",
        "mirror_subdir": "mnist",
        "torchvision_class": "MNIST",
        "gz_optional": True,
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
        "image_shape": (1, 28, 28),
        "n_classes": 10,
        "config": DatasetConfig,
    },
    "fashion_mnist": {
        "format": "idx",
        "citation": ('Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine '
                     'Learning Algorithms", arXiv:1708.07747; ' + FASHION_HOST),
        "mirror_subdir": "fashion_mnist",
        "files": dict(_FASHION_FILES),
        "urls": {f: FASHION_HOST + f for f in _FASHION_FILES.values()},
        # MD5 of the gzipped files as distributed: the official sums (Fashion-MNIST README, torchvision FashionMNIST)
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "image_shape": (1, 28, 28),
        "n_classes": 10,
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"],
        "config": DatasetConfig,
    },
    "frey_face": {
        "format": "mat",
        "citation": ("Brendan Frey's face images, from Sam Roweis' data page https://cs.nyu.edu/~roweis/data.html; "
                     'used by Kingma & Welling 2014, "Auto-Encoding Variational Bayes"'),
        "mirror_subdir": "frey_face",
        "urls": {"frey_rawface.mat": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"},
        "files": {"images": "frey_rawface.mat"},
        # MD5: the sum public loaders check for the official URL; SHA-256 computed from the offline mirror's
        # copy (1,100,584 bytes), whose MD5 is that official sum.
        "md5": {"frey_rawface.mat": "5aeb024d42b8a6091f30e5eb18c8a48d"},
        "sha256": {"frey_rawface.mat": "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"},
        "mat_variable": "ff",
        "n_images": FREY_N_IMAGES,
        "image_shape": (1, 28, 20),
        "n_classes": None,
        "config": FreyFaceConfig,
    },
    "cifar10": cifar10.ENTRY,
    "svhn": svhn.ENTRY,
    "celeba": celeba.ENTRY,
}

# The settings class of each dataset (the study's ``datasets.<name>``).
DATASET_CONFIGS: dict[str, type[StrictConfig]] = {name: spec["config"] for name, spec in DATASETS.items()}
for _name, _config in DATASET_CONFIGS.items():
    registry.DATASETS.register(_name, _config)
registry.DATASETS.register_image_folder(ImageFolderConfig)


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


def _gunzip(raw: bytes, path: Path) -> bytes:
    """The decompressed bytes of the gzip data ``raw`` read from ``path``; DataIntegrityError names the file when
    the data is not valid gzip (truncated, corrupted)."""
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataIntegrityError(f"{path}: not valid gzip data ({one_line(exc)}): the file is truncated or "
                                 "corrupted; replace it with an intact copy") from None


def read_maybe_gz(path: Path) -> bytes:
    """Return the decompressed bytes of ``path`` (gunzipped if the name ends with ``.gz``).

    Raises:
        DataIntegrityError: a ``.gz`` file that is not valid gzip data (truncated, corrupted); names the file.
    """
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataIntegrityError(f"{path}: not valid gzip data ({one_line(exc)}): the file is truncated or "
                                     "corrupted; replace it with an intact copy") from None
    return path.read_bytes()


def find_file(folder: Path, name: str) -> Path:
    """Locate ``name`` or ``name.gz`` in ``folder`` (gzipped preferred); FileNotFoundError names both."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"dataset file missing: expected {folder / name}.gz or {folder / name}")


def _setting(cfg: StrictConfig | dict | None, key: str) -> Any:
    """The value of setting ``key`` in ``cfg`` (a settings object or dict); None when absent or ``cfg`` is None."""
    if cfg is None:
        return None
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def required_files(name: str, cfg: StrictConfig | dict | None = None) -> list[str]:
    """The files of dataset ``name`` that preparing it with settings ``cfg`` reads (None: the defaults): every file
    of its entry except an optional one whose setting is false (SVHN's ``extra_32x32.mat`` without ``extra: true``).

    Raises:
        KeyError: unknown dataset name.
    """
    spec = _spec(name)
    optional = spec.get("optional_files", {})
    return [f for f in spec["files"].values() if f not in optional or _setting(cfg, optional[f])]


def mirror_layout(name: str) -> str:
    """The files of dataset ``name`` as an offline mirror holds them: ``<mirror>/<subdir>/<file>``, one per line
    (MNIST's IDX files may also be gzipped: ``<file>[.gz]``; a file needed only with a setting is marked
    ``(optional: ...)``)."""
    spec = _spec(name)
    gz = "[.gz]" if spec.get("gz_optional") else ""
    optional = spec.get("optional_files", {})
    return "\n".join(f"  <mirror>/{spec['mirror_subdir']}/{f}{gz}"
                     + (f"   (optional: read only with {optional[f]}: true)" if f in optional else "")
                     for f in spec["files"].values())


def _download_error(name: str, spec: dict, urls: list[str], expected: list[Path], exc: BaseException
                    ) -> DatasetDownloadError:
    why = " ".join(f"{type(exc).__name__}: {exc}".split())          # one line (torchvision's errors span several)
    if len(why) > 600:
        why = why[:597] + "..."
    return DatasetDownloadError(
        f"could not download dataset {name!r}: tried {', '.join(urls)} ({why}); expected file(s) "
        f"{', '.join(str(p) for p in expected)}; nothing was kept (no partial file, no folder this attempt created). "
        f"Without internet access, use an offline mirror laid out as\n{mirror_layout(name)}\nand pass --mirror "
        "<mirror> (or set VAEBENCH_DATA_MIRROR).")


@contextlib.contextmanager
def _undo_on_failure(root: Path):
    """Leave the disk as it was if the block raises: remove every file and folder it created under ``root``, then
    ``root`` and its parents if it created them (each only when empty). Files that were there before are kept."""
    created = []
    for p in (root, *root.parents):           # the missing folders, deepest first
        if p.exists():
            break
        created.append(p)
    before = set(root.rglob("*")) if root.is_dir() else set()
    try:
        yield
    except BaseException:
        if root.is_dir():
            for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
                if p in before:
                    continue
                with contextlib.suppress(OSError):
                    p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _download_files(name: str, spec: dict, raw_dir: str | os.PathLike, files: list[str]) -> Path:
    """Download ``files`` of dataset ``name`` from their URLs (``spec["urls"]``) into ``<raw_dir>/<mirror_subdir>/``.

    Each file is streamed to a temporary file beside its target and moved into place once complete and its MD5
    (when recorded) matches; a file already there is kept (it is verified when read). On any failure every file and
    folder this call created is removed (:func:`_undo_on_failure`), so nothing partial is left.

    Returns:
        the folder.
    Raises:
        DatasetDownloadError: a network or file-system failure; names the dataset, the URLs tried, the files
            expected and the mirror layout.
        DataIntegrityError: a downloaded file's MD5 differs from the recorded one (names URL, expected and actual).
    """
    folder = Path(raw_dir) / spec["mirror_subdir"]
    tried: list[str] = []
    with _undo_on_failure(folder):
        for fname in files:
            target = folder / fname
            if target.is_file():
                continue
            url = spec["urls"][fname]
            tried.append(url)
            try:
                with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(target) as tmp, \
                        open(tmp, "wb") as f:
                    md5 = hashlib.md5()
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        md5.update(chunk)
                        f.write(chunk)
                    f.flush()
                    check_digests(f"{url} (downloaded as {target}; not kept)",
                                  {"md5": spec.get("md5", {}).get(fname)}, {"md5": md5.hexdigest()})
            except DataIntegrityError:
                raise
            except Exception as exc:  # noqa: BLE001 - any network or disk failure: one message
                raise _download_error(name, spec, tried, [folder / f for f in files], exc) from None
    return folder


def _download_torchvision(name: str, spec: dict, raw_dir: str | os.PathLike) -> tuple[Path, str]:
    """Download an IDX dataset with torchvision (``spec["torchvision_class"]``, which checks the gz MD5s) into
    ``<raw_dir>/<TorchvisionClass>/raw/``; on failure nothing it created is left. Returns (folder, URLs)."""
    import torchvision.datasets  # lazy: importing torchvision takes seconds

    cls = getattr(torchvision.datasets, spec["torchvision_class"])
    folder = Path(raw_dir) / spec["torchvision_class"] / "raw"
    urls = [cls.mirrors[0] + f + ".gz" for f in spec["files"].values()]
    try:
        with _undo_on_failure(folder):
            cls(root=str(raw_dir), train=True, download=True)  # downloads all four files, checks gz MD5s
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError / URLError / OSError
        raise _download_error(name, spec, urls, [folder / f for f in spec["files"].values()], exc) from None
    return folder, " ".join(urls)


def check_mirror(name: str, mirror: str | os.PathLike) -> Path:
    """Check that the offline mirror root ``mirror`` exists and holds the folder of dataset ``name``; returns
    that folder, ``<mirror>/<mirror_subdir>/``. (Its files are checked by :func:`missing_mirror_files`.)

    Raises:
        KeyError: unknown dataset name.
        MirrorError: the root does not exist (or is no folder), or ``<mirror>/<mirror_subdir>/`` is missing; the
            message names the missing folder, the mirror root and where it came from (``--mirror`` /
            ``$VAEBENCH_DATA_MIRROR``) and shows :func:`mirror_layout`.
    """
    spec = _spec(name)
    root = Path(mirror)
    folder = root / spec["mirror_subdir"]
    origin = "from --mirror or $VAEBENCH_DATA_MIRROR"
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise MirrorError(f"dataset mirror root {str(root)!r} ({origin}) {state}: expected the mirror folder of "
                          f"{name!r} at {folder}; {_layout_text(name)}")
    if not folder.is_dir():
        raise MirrorError(f"dataset mirror folder missing for {name!r}: expected {folder} (the mirror root "
                          f"{str(root)!r}, {origin}, has no {spec['mirror_subdir']}/ folder); {_layout_text(name)}")
    return folder


def missing_mirror_files(name: str, folder: str | os.PathLike, cfg: StrictConfig | dict | None = None
                         ) -> MirrorError | None:
    """The error for the files of dataset ``name`` that preparing it with settings ``cfg`` needs
    (:func:`required_files`; None: the defaults) and its mirror folder ``folder`` lacks (MNIST: neither ``<file>``
    nor ``<file>.gz``), or None when every one is there. Its message names every missing file and what the folder
    holds, and shows :func:`mirror_layout`. A gzipped official file (Fashion-MNIST) present only decompressed is
    named as such: only the sums of the files as distributed are recorded, so the mirror must hold those."""
    spec = _spec(name)
    folder = Path(folder)
    gz = bool(spec.get("gz_optional"))
    missing = [f for f in required_files(name, cfg)
               if not ((folder / f).is_file() or (gz and (folder / f"{f}.gz").is_file()))]
    if not missing:
        return None
    optional = spec.get("optional_files", {})
    expected = ", ".join((f"{folder / f}[.gz]" if gz else str(folder / f))
                         + (f" (read with {optional[f]}: true)" if f in optional else "") for f in missing)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    held = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
    plain = [f.removesuffix(".gz") for f in missing if f.endswith(".gz") and (folder / f.removesuffix(".gz")).exists()]
    hint = (f"; {', '.join(plain)} {'is' if len(plain) == 1 else 'are'} there decompressed, which cannot be verified: "
            "the official checksums are those of the gzipped files, so the mirror must hold the official .gz files "
            "as distributed" if plain else "")
    return MirrorError(f"dataset file missing from the mirror of {name!r}: expected {expected} (the folder "
                       f"holds {held or 'nothing'}){hint}; {_layout_text(name)}")


def _layout_text(name: str) -> str:
    return f"the mirror of {name!r} is laid out as\n{mirror_layout(name)}"


def resolve_source(name: str, spec: dict, mirror: str | os.PathLike | None, raw_dir: str | os.PathLike,
                   cfg: StrictConfig | dict | None = None) -> tuple[Path, str]:
    """Return (folder holding the raw files, human-readable source) for dataset ``name`` prepared with settings
    ``cfg`` (None: the defaults; they decide which optional files are needed).

    With ``mirror``: ``<mirror>/<mirror_subdir>/``. Without: download, MNIST with torchvision into
    ``<raw_dir>/MNIST/raw/`` (torchvision leaves the decompressed files there), the others from their URLs
    (``spec["urls"]``) into ``<raw_dir>/<mirror_subdir>/``; CelebA is never downloaded.

    Raises:
        MirrorError: (a FileNotFoundError) the mirror root or its folder for the dataset is missing (names
            it and shows the expected layout; see :func:`check_mirror`).
        DatasetDownloadError: the download failed (names the dataset, URLs, files expected, mirror layout; nothing
            is left behind), or the dataset is not downloadable (CelebA: where to get the files, the layout).
        DataIntegrityError: a downloaded file's MD5 differs from the recorded one (the file is not kept).
    """
    if mirror is not None:
        folder = check_mirror(name, mirror)
        return folder, str(folder.resolve())
    if spec.get("download_refusal") is not None:
        raise DatasetDownloadError(spec["download_refusal"](mirror_layout(name)))
    if spec.get("urls"):
        files = required_files(name, cfg)
        return _download_files(name, spec, raw_dir, files), " ".join(spec["urls"][f] for f in files)
    return _download_torchvision(name, spec, raw_dir)


def read_mat_file(name: str, folder: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Read and verify the MATLAB file of dataset ``name`` (Frey Face) from ``folder``.

    The file's MD5 and SHA-256 are checked before it is parsed (scipy.io.loadmat).

    Returns:
        (images uint8 (N, H, W) in the file's column order, {file name: SHA-256 hex digest}); for Frey Face
        N = 1965, (H, W) = (28, 20), image i = ``ff[:, i].reshape(28, 20)`` (row-major).
    Raises:
        KeyError: unknown dataset name.
        FileNotFoundError: the file is missing (message names the expected path).
        DataIntegrityError: an MD5 or SHA-256 mismatch (names the file, expected and actual sum), or the file
            lacks the variable or it has another shape or dtype.
    """
    from scipy.io import loadmat  # lazy: only MATLAB datasets need it

    spec = _spec(name)
    (fname,) = spec["files"].values()
    path = Path(folder) / fname
    if not path.is_file():
        raise FileNotFoundError(f"dataset file missing: expected {path}")
    buf = path.read_bytes()
    actual = {"md5": hashlib.md5(buf).hexdigest(), "sha256": hashlib.sha256(buf).hexdigest()}
    check_digests(str(path), {"md5": spec["md5"][fname], "sha256": spec["sha256"][fname]}, actual)
    var = spec["mat_variable"]
    _, h, w = spec["image_shape"]
    try:
        mat = loadmat(io.BytesIO(buf))
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError/TypeError/... on bad files
        raise DataIntegrityError(f"{path}: not a readable MATLAB file: {exc}") from None
    ff = mat.get(var)
    want = (h * w, spec["n_images"])
    if not isinstance(ff, np.ndarray) or ff.shape != want or ff.dtype != np.uint8:
        got = "absent" if ff is None else f"{getattr(ff, 'shape', '?')} {getattr(ff, 'dtype', '?')}"
        raise DataIntegrityError(f"{path}: variable {var!r} should be uint8 of shape {want}, got {got}")
    images = np.ascontiguousarray(ff.T).reshape(-1, h, w)  # column i -> row-major (H, W)
    return images, {fname: actual["sha256"]}


def read_idx_files(name: str, folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and verify the four IDX files of dataset ``name`` (MNIST, Fashion-MNIST) from ``folder``.

    MNIST (``gz_optional``): ``<file>`` or ``<file>.gz``, the SHA-256 of the decompressed bytes is checked.
    Fashion-MNIST: the official ``<file>.gz`` as distributed, its MD5 checked before it is decompressed. Every file
    is checked before anything is returned, so a caller writes nothing on failure.

    Returns:
        (arrays by role: ``train_images`` (N,H,W) uint8, ``train_labels`` (N,) uint8, ``test_*``;
         SHA-256 hex digest by file name: of each decompressed file (MNIST), of each .gz file (Fashion-MNIST))
    Raises:
        KeyError: unknown dataset name.
        FileNotFoundError: a file is missing (message names the expected path, and says so when a gzipped
            official file is there only decompressed: it cannot be verified).
        DataIntegrityError: a checksum mismatch (names file, expected and actual sum), bad gzip or IDX data, or
            image and label counts that differ.
    """
    spec = _spec(name)
    folder = Path(folder)
    arrays, sums = {}, {}
    for role, fname in spec["files"].items():
        if spec.get("gz_optional"):
            path = find_file(folder, fname)
            buf = read_maybe_gz(path)
            actual = hashlib.sha256(buf).hexdigest()
            expected = spec["sha256"][fname]
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
            check_digests(str(path), {"md5": spec.get("md5", {}).get(fname),
                                      "sha256": spec.get("sha256", {}).get(fname)}, digests)
            buf = _gunzip(raw, path) if fname.endswith(".gz") else raw
            actual = digests["sha256"]
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


def _settings(spec: dict, cfg: StrictConfig | dict | None) -> StrictConfig:
    """``cfg`` as an instance of the spec's settings class (a dict or another settings object is validated)."""
    cls = spec["config"]
    if isinstance(cfg, cls):
        return cfg
    return cls.model_validate(cfg.model_dump() if isinstance(cfg, StrictConfig) else cfg or {})


def dataset_spec(name: str, cfg: StrictConfig | dict | None = None) -> dict:
    """The spec of dataset ``name`` with settings ``cfg`` (the study's ``datasets.<name>``): a registered
    dataset's entry of :data:`DATASETS`, with ``image_shape`` (C, H, W) resolved for ``cfg`` when it depends on the
    settings (``image_shape_of``: SVHN's and CelebA's ``image_size``; with ``cfg`` None the entry itself, default
    shape), or for any other name with ``kind: image_folder`` a spec built from its settings: ``{"format":
    "image_folder", "image_shape": (channels, H, W), "config": ImageFolderConfig, "settings": the validated
    ImageFolderConfig}``. An image folder's number of classes is known only once it is read: the prepared file's
    ``meta["n_classes"]`` (what the classifier stage reads), not the spec.

    Raises:
        KeyError: an unregistered name without ``kind: image_folder`` (lists the known names).
        pydantic.ValidationError: invalid settings (a dict).
    """
    if name in DATASETS:
        spec = DATASETS[name]
        if cfg is None or "image_shape_of" not in spec:
            return spec
        return {**spec, "image_shape": tuple(spec["image_shape_of"](_settings(spec, cfg)))}
    kind = cfg.get("kind") if isinstance(cfg, dict) else getattr(cfg, "kind", None)
    if kind != "image_folder":
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} (or a folder of your own images: "
                       "kind: image_folder)")
    settings = cfg if isinstance(cfg, ImageFolderConfig) else ImageFolderConfig.model_validate(
        cfg.model_dump() if isinstance(cfg, StrictConfig) else cfg)
    return {"format": "image_folder", "image_shape": (settings.channels, *settings.size_hw),
            "config": ImageFolderConfig, "settings": settings}


# -----------------------------------------------------------------------------
# Preparation

def prepare_dataset(name: str, cfg: StrictConfig | dict | None, out_path: str | os.PathLike,
                    mirror: str | os.PathLike | None = None, raw_dir: str | os.PathLike = "data/raw") -> dict:
    """Fetch, verify, split and save dataset ``name`` as one ``.npz`` (written atomically).

    Args:
        name: registry key in ``DATASETS`` (``"mnist"``, ``"fashion_mnist"``, ``"frey_face"``, ``"cifar10"``,
            ``"svhn"``, ``"celeba"``), or any other name whose ``cfg`` has ``kind: image_folder``
            (:class:`ImageFolderConfig`; see :func:`dataset_spec`).
        cfg: the dataset's settings (its class in :data:`DATASET_CONFIGS`, or ImageFolderConfig); a dict is
            validated into that class; None = the defaults.
        out_path: destination ``.npz`` (see the module docstring for its arrays).
        mirror: root of an offline mirror holding ``<mirror>/<mirror_subdir>/<files>`` (see
            :func:`mirror_layout`); ``None`` downloads into ``raw_dir``. Unused for an image folder (its
            ``path`` is the source).
        raw_dir: download root (used only when ``mirror`` is None).
    Returns:
        summary dict: ``dataset``, ``out_path``, ``source``, ``counts`` {train, val, test},
        ``image_shape`` [C, H, W], ``sha256`` {file: digest}.
    Raises:
        KeyError (unknown dataset), ValueError (an invalid setting, named; a split too large),
        MirrorError (a FileNotFoundError: mirror root, folder or file missing, with the expected layout),
        DatasetDownloadError (download failed, nothing left behind; CelebA without a mirror), DataIntegrityError
        (checksum mismatch, malformed file, a ``.gz`` that is not valid gzip data; names the file),
        ImageFolderError (an image folder: a missing path, an unreadable or wrongly sized image, a file outside the
        layout, an empty split; names the file). On any error no output file is written (an earlier one is kept
        as it was).
    """
    spec = dataset_spec(name, cfg)
    settings = _settings(spec, cfg)
    cfg = settings.model_dump(mode="json")
    n_classes = spec.get("n_classes")
    if spec["format"] == "image_folder":    # its path is the source: no mirror, no download (mirror unused)
        splits, extra, split_meta, sums, source, classes = _split_image_folder(spec["settings"], cfg)
        splits = {s: (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x, y) for s, (x, y) in splits.items()}
        n_classes = len(classes) if classes else None
        return _write_prepared(name, out_path, splits, extra, split_meta, sums, source, n_classes, cfg,
                               {"classes": classes} if classes else {})
    folder, source = resolve_source(name, spec, mirror, raw_dir, settings)
    if mirror is not None:
        missing = missing_mirror_files(name, folder, settings)
        if missing is not None:
            raise missing
    reader = spec.get("prepare") or _FORMAT_READERS[spec["format"]]
    try:
        parts = reader(name, spec, cfg, folder)
    except FileNotFoundError:
        missing = missing_mirror_files(name, folder, settings) if mirror is not None else None
        if missing is None:
            raise
        raise missing from None     # the same, with every missing file, the folder's content and the layout
    return _write_prepared(name, out_path, parts.splits, parts.extra, parts.split_meta, parts.sums, source,
                           n_classes, cfg, parts.more_meta)


def _write_prepared(name: str, out_path: str | os.PathLike, splits: dict, extra: dict, split_meta: dict,
                    sums: dict, source: str, n_classes: int | None, cfg: dict, more_meta: dict | None = None) -> dict:
    """Write the ``.npz`` of the file contract atomically (nothing on error); returns prepare_dataset's summary.
    ``splits``: {split: (images (N, H, W) grey or (N, C, H, W), labels (N,))}."""
    out = {}
    for split, (x, y) in splits.items():
        out[f"x_{split}"] = np.ascontiguousarray(x[:, None] if x.ndim == 3 else x, dtype=np.uint8)  # -> N,C,H,W
        out[f"y_{split}"] = y.astype(np.int64)
    out.update(extra)
    counts = {split: int(len(out[f"y_{split}"])) for split in splits}
    image_shape = list(out["x_train"].shape[1:])
    labelled = n_classes is not None

    meta = {
        "dataset": name,
        "source": source,
        "sha256": sums,
        "counts": counts,
        "image_shape": image_shape,
        "n_classes": n_classes,
        "labelled": labelled,
        "dtype": "uint8 (0..255), layout N,C,H,W; labels int64" + ("" if labelled else " (-1: unlabelled)"),
        "split": split_meta,
        "config": cfg,
        **(more_meta or {}),
    }
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"dataset": name, "out_path": str(out_path), "source": source, "counts": counts,
            "image_shape": image_shape, "sha256": sums}


_seeded_subset = seeded_subset       # (the image-folder split below uses the shared helpers under these names)
frey_face_split = seeded_split


def _first(x: np.ndarray, cfg: dict, key: str) -> np.ndarray:
    return first_n(x, cfg[key])


def _split_idx(name: str, spec: dict, cfg: dict, folder: Path) -> Prepared:
    """MNIST's (and Fashion-MNIST's) fixed split: validation = the last ``n_validation`` official training images.
    Returns images (N, 28, 28), labels, meta["split"], sha256 by file (and ``meta["classes"]`` if recorded)."""
    arrays, sums = read_idx_files(name, folder)
    x_full, y_full = arrays["train_images"], arrays["train_labels"]
    n_full, n_val = len(x_full), cfg["n_validation"]
    if n_val >= n_full:
        raise ValueError(f"n_validation={n_val} must be smaller than the official training set ({n_full})")
    n_train = n_full - n_val
    first = lambda x, key: _first(x, cfg, key)  # noqa: E731
    splits = {
        "train": (first(x_full[:n_train], "max_train"), first(y_full[:n_train], "max_train")),
        "val": (first(x_full[n_train:], "max_validation"), first(y_full[n_train:], "max_validation")),
        "test": (first(arrays["test_images"], "max_test"), first(arrays["test_labels"], "max_test")),
    }
    counts = {k: len(v[0]) for k, v in splits.items()}
    split_meta = {
        "description": (f"validation = the last {n_val} images of the official training set "
                        f"(indices {n_train}..{n_full - 1}); train = the first {n_train}; "
                        f"test = the official test set; then max_* keeps the first N of a split"),
        "train_source_indices": [0, counts["train"]],
        "val_source_indices": [n_train, n_train + counts["val"]],
        "test_source_indices": [0, counts["test"]],
    }
    return Prepared(splits, split_meta, sums, more_meta={"classes": list(spec["classes"])} if "classes" in spec else {})


def _split_mat(name: str, spec: dict, cfg: dict, folder: Path) -> Prepared:
    """Frey Face's seeded split (:func:`frey_face_split`), then ``max_*``. Returns images (N, 28, 20), labels -1,
    ``source_index_<split>`` (column indices), meta["split"], sha256 by file."""
    images, sums = read_mat_file(name, folder)
    index = frey_face_split(len(images), cfg["n_validation"], cfg["n_test"], cfg["split_seed"])
    index = {split: _first(idx, cfg, SPLIT_CAPS[split]) for split, idx in index.items()}
    splits = {split: (images[idx], np.full(len(idx), -1, dtype=np.int64)) for split, idx in index.items()}
    n = len(images)
    split_meta = {
        "description": (f"no official split: perm = numpy.random.RandomState({cfg['split_seed']}).permutation({n}); "
                        f"test = perm[:{cfg['n_test']}], validation = perm[{cfg['n_test']}:"
                        f"{cfg['n_test'] + cfg['n_validation']}], train = the other "
                        f"{n - cfg['n_test'] - cfg['n_validation']}, each sorted by column index of "
                        f"'{spec['mat_variable']}'; then max_* keeps the first N of a split. The column indices "
                        "are stored in the arrays source_index_train / source_index_val / source_index_test"),
        "seed": cfg["split_seed"],
        "rule": "numpy.random.RandomState(seed).permutation(n): test, validation, train",
        "n_source_images": n,
        "index_sha256": {split: index_sha256(idx) for split, idx in index.items()},
    }
    return Prepared(splits, split_meta, sums, extra={f"source_index_{split}": idx for split, idx in index.items()})


# The readers of the formats defined in this module (a dataset module's entry names its own: "prepare").
_FORMAT_READERS = {"idx": _split_idx, "mat": _split_mat}


# -----------------------------------------------------------------------------
# Image folders (kind ``image_folder``): a user's own PNG / JPEG files, in a folder or a tar archive
#
# Decoded with Pillow, file by file, rather than with torchvision.datasets.ImageFolder: ImageFolder needs the files
# extracted on disk (we read a .tar / .tar.gz member by member, never extracting it), returns PIL images or float
# tensors through per-sample transforms (we need one uint8 array), and fails on a bad file with an error that does
# not name the file inside an archive (we name every bad file, and check all of them before writing anything).

def _read_image_files(root: Path) -> tuple[list[tuple[str, str, bytes]], str, dict[str, str]]:
    """The image files of a folder or tar archive ``root``, sorted by path.

    Only regular files whose name ends with an image extension (``.png``, ``.jpg``, ``.jpeg``, any case) are
    read; every other file (README, labels.csv, .DS_Store, ...) is ignored. A file WITH an image extension is
    never skipped: if it is not a readable image the preparation fails naming it.

    Returns:
        ([(path relative to the root, as shown in errors, bytes)], source description,
        {name: SHA-256}); a tar: the SHA-256 of the archive file; a folder: the SHA-256 of its sorted listing
        ``"<relative path>\\t<SHA-256 of the file>\\n"`` over the image files (stored under ``"<folder>/"``).
    Raises:
        ImageFolderError: the path is missing, is neither a folder nor a tar archive, the archive is unreadable
            (truncated, corrupt) or holds an image path twice or as a link.
    """
    import tarfile

    if not root.exists():
        raise ImageFolderError(f"image folder {root} does not exist (the dataset's path, relative to the "
                               f"repository root {Path.cwd()})")
    files: list[tuple[str, str, bytes]] = []
    if root.is_dir():
        listing = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                rel = p.relative_to(root).as_posix()
                buf = p.read_bytes()
                files.append((rel, str(p), buf))
        files.sort(key=lambda f: f[0])
        for rel, _, buf in files:
            listing.update(f"{rel}\t{hashlib.sha256(buf).hexdigest()}\n".encode())
        return files, str(root.resolve()), {f"{root.name}/": listing.hexdigest()}
    if not (root.is_file() and _is_tar_name(root)):
        raise ImageFolderError(f"image folder {root} is neither a folder nor a {' / '.join(TAR_SUFFIXES)} archive")
    digest = hashlib.sha256()
    with open(root, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    seen: set[str] = set()
    member = None
    try:
        with tarfile.open(root, "r:*") as tar:
            for member in tar:                   # sequential: each member read as the stream passes it
                name = member.name.removeprefix("./")
                if not name.lower().endswith(IMAGE_EXTENSIONS) or member.isdir():
                    continue
                shown = f"{name} (in {root})"
                if not member.isfile():
                    raise ImageFolderError(f"{shown}: a link or special file, not an image file")
                if name in seen:
                    raise ImageFolderError(f"{shown}: the archive holds this path twice")
                seen.add(name)
                files.append((name, shown, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        after = f" after member {member.name}" if member is not None else ""
        raise ImageFolderError(f"{root}: not a readable tar archive ({one_line(exc)}){after}: the file is "
                               "truncated or corrupted") from None
    files.sort(key=lambda f: f[0])
    return files, str(root.resolve()), {root.name: digest.hexdigest()}


def _decode_image(shown: str, buf: bytes, settings: ImageFolderConfig) -> np.ndarray:
    """One image file as uint8 (H, W) (channels 1) or (H, W, 3), converted and sized as ``settings`` say.
    Raises ImageFolderError naming the file: not decodable (not an image, corrupt, truncated: ``load()`` decodes
    every pixel), or another size with ``resize: error``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    h, w = settings.size_hw
    try:
        img = Image.open(io.BytesIO(buf))
        img.load()
        img = img.convert("L" if settings.channels == 1 else "RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        why = ("UnidentifiedImageError: Pillow recognises no image format in it"
               if isinstance(exc, UnidentifiedImageError) else one_line(exc))     # (its message shows an address)
        raise ImageFolderError(f"{shown}: not a readable image ({why}): the file is not a PNG/JPEG image, or it is "
                               "corrupt or truncated") from None
    if img.size != (w, h):
        if settings.resize == "error":
            raise ImageFolderError(f"{shown}: image is {img.size[1]}x{img.size[0]} (height x width), expected "
                                   f"{h}x{w} (image_size); set resize: center_crop_resize to crop and resize such "
                                   "images")
        img = ImageOps.fit(img, (w, h), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(img, dtype=np.uint8)


def _image_folder_layout(files: list[tuple[str, str, bytes]], root: Path, split: str
                         ) -> tuple[dict[str, list[int]], dict[str, list[str | None]]]:
    """Assign every image file to a source group and a class.

    A tar whose images all lie in one top-level folder (other than train/ or test/) has that folder as its root.
    ``split: folders``: ``train/[<class>/]*.ext`` and ``test/[<class>/]*.ext``; ``split: random``: ``*.ext`` or
    ``<class>/*.ext``. Every image follows the same pattern (all with a class folder, or none).

    Returns:
        ({group: [index into files]}, {group: [class name or None]}); groups "train", "test" (folders) or "all".
    Raises:
        ImageFolderError: no image at all, an image outside the layout (named), a mixed layout, an empty split.
    """
    where = f"{root} (folder)" if root.is_dir() else f"{root} (archive)"
    exts = ",".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    expected = (f"train/[<class>/]*.{{{exts}}} and test/[<class>/]*.{{{exts}}}" if split == "folders"
                else f"*.{{{exts}}} or <class>/*.{{{exts}}}")
    if not files:
        raise ImageFolderError(f"{where}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found; expected "
                               f"{expected}")
    parts = [rel.split("/") for rel, _, _ in files]
    tops = {p[0] for p in parts}
    if (not root.is_dir() and len(tops) == 1 and all(len(p) > 1 for p in parts)
            and not tops & {"train", "test"}):
        parts = [p[1:] for p in parts]           # archive with a single top-level folder
        tops = {p[0] for p in parts}
    if split == "random" and {"train", "test"} <= tops:
        raise ImageFolderError(f"{where}: holds train/ and test/ folders: use split: folders (split: random "
                               f"expects {expected})")
    groups: dict[str, list[int]] = {}
    classes: dict[str, list[str | None]] = {}
    with_class = None
    for i, p in enumerate(parts):
        shown = files[i][1]
        if split == "folders":
            if p[0] not in ("train", "test") or len(p) == 1:
                raise ImageFolderError(f"{shown}: image outside train/ and test/ (split: folders expects "
                                       f"{expected})")
            group, rest = p[0], p[1:]
        else:
            group, rest = "all", p
        if len(rest) > 2:
            raise ImageFolderError(f"{shown}: image nested too deep (expected {expected})")
        has_class = len(rest) == 2
        if with_class is None:
            with_class = has_class
        elif has_class != with_class:
            raise ImageFolderError(f"{shown}: mixed layout, some images lie in class folders and some do not "
                                   f"(expected {expected}, all images alike)")
        groups.setdefault(group, []).append(i)
        classes.setdefault(group, []).append(rest[0] if has_class else None)
    for group in (("train", "test") if split == "folders" else ()):
        if group not in groups:
            raise ImageFolderError(f"{where}: no images in {group}/ (split: folders expects {expected})")
    return groups, classes


def _split_image_folder(settings: ImageFolderConfig, cfg: dict
                        ) -> tuple[dict, dict, dict, dict, str, list[str]]:
    """Read, check and split an image folder. Every image is decoded (and checked) before anything is returned.

    Split (stored in ``meta["split"]`` and, per image, ``source_index_<split>``: its index in the sorted list of
    its source group): ``split: folders``: test = test/, ``perm = numpy.random.RandomState(split_seed).permutation(
    n_train_folder)``, validation = ``perm[:n_validation]``, train = the rest; ``split: random``: over all images,
    test = ``perm[:n_test]``, validation = ``perm[n_test:n_test + n_validation]``, train = the rest; each sorted
    (:func:`frey_face_split`). Then ``max_*`` keeps the first N of a split. Labels: the index of the class folder
    in the sorted class names (of train/ with split: folders), -1 for every image without class folders.

    Returns:
        ({split: (images (N,H,W) or (N,H,W,3), labels)}, {"source_index_<split>": indices}, meta["split"],
        sha256, source, sorted class names ([] when unlabelled)).
    Raises:
        ImageFolderError: see :func:`_read_image_files`, :func:`_image_folder_layout`, :func:`_decode_image`; a
            test class without training images; a split left empty by n_validation / n_test.
    """
    root = Path(settings.path)
    files, source, sums = _read_image_files(root)
    groups, group_classes = _image_folder_layout(files, root, settings.split)
    first_group = "train" if settings.split == "folders" else "all"
    class_names = sorted({c for c in group_classes[first_group] if c is not None})
    label = {c: i for i, c in enumerate(class_names)}
    for group, names in group_classes.items():
        for i, c in zip(groups[group], names):
            if c is not None and c not in label:
                raise ImageFolderError(f"{files[i][1]}: class {c!r} has no training images (classes of train/: "
                                       f"{', '.join(class_names)})")
    images = {group: np.stack([_decode_image(files[i][1], files[i][2], settings) for i in idx])
              for group, idx in groups.items()}
    labels = {group: np.array([label[c] if c is not None else -1 for c in names], dtype=np.int64)
              for group, names in group_classes.items()}
    n_val, seed = settings.n_validation, settings.split_seed
    if settings.split == "folders":
        n = len(images["train"])
        if n_val >= n:
            raise ImageFolderError(f"{root}: n_validation = {n_val} leaves no training image: train/ holds {n} "
                                   "images")
        drawn = frey_face_split(n, n_val, 0, seed)
        index = {"train": ("train", drawn["train"]), "val": ("train", drawn["val"]),
                 "test": ("test", np.arange(len(images["test"]), dtype=np.int64))}
        rule = (f"test = the images of test/ (sorted paths); perm = numpy.random.RandomState({seed}).permutation({n}) "
                f"over the sorted images of train/: validation = perm[:{n_val}], train = the other {n - n_val}, "
                "each sorted")
    else:
        n, n_test = len(images["all"]), settings.n_test
        if n_val + n_test >= n:
            raise ImageFolderError(f"{root}: n_validation + n_test = {n_val} + {n_test} leaves no training image: "
                                   f"the folder holds {n} images")
        drawn = frey_face_split(n, n_val, n_test, seed)
        index = {split: ("all", idx) for split, idx in drawn.items()}
        rule = (f"perm = numpy.random.RandomState({seed}).permutation({n}) over all images (sorted paths): "
                f"test = perm[:{n_test}], validation = perm[{n_test}:{n_test + n_val}], train = the other "
                f"{n - n_test - n_val}, each sorted")
    # max_*: a seeded subset, not the first N: the paths are sorted by class folder, so the first N would hold
    # only the first classes
    caps = {"train": "max_train", "val": "max_validation", "test": "max_test"}
    index = {split: (group, _seeded_subset(idx, cfg[caps[split]], seed)) for split, (group, idx) in index.items()}
    splits = {split: (images[group][idx], labels[group][idx]) for split, (group, idx) in index.items()}
    split_meta = {
        "description": (f"{rule}; then max_* keeps a seeded subset of N of a split: the first N of "
                        f"numpy.random.RandomState({seed}).permutation(n) over its images, sorted. source_index_<split> is each image's "
                        "index in the sorted paths of its source (" +
                        ("train/ or test/" if settings.split == "folders" else "all images") + ")"),
        "kind": "image_folder",
        "layout": settings.split,
        "seed": seed,
        "n_source_images": {group: len(idx) for group, idx in groups.items()},
        "index_sha256": {split: hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
                         for split, (_, idx) in index.items()},
    }
    return (splits, {f"source_index_{split}": idx for split, (_, idx) in index.items()}, split_meta, sums, source,
            class_names)
