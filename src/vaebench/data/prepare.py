"""Dataset preparation: fetch, verify, split and store image datasets as one ``.npz`` per dataset.

Pipeline contract
-----------------
``prepare_dataset`` reads the original distribution files of a dataset (from a local mirror folder or
downloaded from the official host), checks their checksums against the sums recorded in ``DATASETS``
(nothing is written on a mismatch), splits them and writes one file atomically::

    x_train, x_val, x_test   uint8   (N, C, H, W)   pixel values 0..255
    y_train, y_val, y_test   int64   (N,)           class labels; -1 for every image of an unlabelled dataset
    meta                     str     JSON: dataset, source, split, sha256 per file, counts, image_shape,
                                     n_classes (null: unlabelled), labelled
    source_index_train, source_index_val, source_index_test   int64 (N,)   (Frey Face only) the image's
                                     column in the original ``ff`` matrix: the stored split

Datasets (registry :data:`DATASETS`; the study's ``datasets`` section takes each one's own settings class,
:data:`DATASET_CONFIGS`):

* ``mnist`` (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): the four IDX files; SHA-256 of the
  *decompressed* bytes. Split (fixed, documented in ``meta``): validation = the LAST ``n_validation`` images
  of the official training set, train = the images before them, test = the official test set; then
  ``max_*`` keeps the first N images of a split (for quick runs). IDX format: 2 zero bytes, 1 type byte,
  1 byte giving the number of dimensions ``k``, ``k`` big-endian int32 sizes, then the data in C order.
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

Reading the file back and batching by index: :mod:`vaebench.data.prepared`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from vaebench.atomic import atomic_path
from vaebench.errors import StageError, one_line
from vaebench.registry import StrictConfig


class DataIntegrityError(StageError):
    """A dataset file's content does not match its recorded checksum (or is not valid IDX / MATLAB data)."""


class MirrorError(StageError, FileNotFoundError):
    """The offline mirror lacks something the prepare stage reads: its root folder, the dataset's folder in it, or
    a file there. The message names the missing folder or file and shows the layout expected
    (:func:`mirror_layout`). Also a FileNotFoundError (the CLI reports it as a missing file, exit code 2)."""


class DatasetDownloadError(StageError):
    """A dataset could not be downloaded; the message names the dataset, the URL tried, the file expected and
    the offline mirror layout that avoids the download."""


# -----------------------------------------------------------------------------
# Per-dataset settings (the study's ``datasets.<name>`` section)

class DatasetConfig(StrictConfig):
    """How MNIST is split and (for quick runs) truncated."""

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


# -----------------------------------------------------------------------------
# Registry. Each dataset names its files (by role), their checksums, the folder name inside a mirror, how to
# download them, its image shape (C, H, W), its number of classes (None: unlabelled) and its settings class.
# IDX datasets: SHA-256 of each DECOMPRESSED file, and the torchvision class that can download them
# (Fashion-MNIST, class "FashionMNIST", uses the same file names and format: add an entry with its sums).
# MATLAB datasets: MD5 and SHA-256 of the file as distributed, its URL and the variable holding the images.

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
        "image_shape": (1, 28, 28),
        "n_classes": 10,
        "config": DatasetConfig,
    },
    "frey_face": {
        "format": "mat",
        "mirror_subdir": "frey_face",
        "url": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
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
}

# The settings class of each dataset (the study's ``datasets.<name>``).
DATASET_CONFIGS: dict[str, type[StrictConfig]] = {name: spec["config"] for name, spec in DATASETS.items()}


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


def mirror_layout(name: str) -> str:
    """The files of dataset ``name`` as an offline mirror holds them: ``<mirror>/<subdir>/<file>``, one per line
    (IDX files may also be gzipped: ``<file>.gz``)."""
    spec = _spec(name)
    gz = "[.gz]" if spec["format"] == "idx" else ""
    return "\n".join(f"  <mirror>/{spec['mirror_subdir']}/{f}{gz}" for f in spec["files"].values())


def _download_error(name: str, spec: dict, urls: list[str], expected: list[Path], exc: BaseException
                    ) -> DatasetDownloadError:
    return DatasetDownloadError(
        f"could not download dataset {name!r}: tried {', '.join(urls)} ({type(exc).__name__}: {exc}); "
        f"expected file(s) {', '.join(str(p) for p in expected)}. Without internet access, use an offline "
        f"mirror laid out as\n{mirror_layout(name)}\nand pass --mirror <mirror> (or set VAEBENCH_DATA_MIRROR).")


def _download_mat(name: str, spec: dict, raw_dir: str | os.PathLike) -> Path:
    """Download the files of a MATLAB dataset into ``<raw_dir>/<mirror_subdir>/`` (atomically; a file already
    there is kept, it is verified when read). Raises DatasetDownloadError naming URL, file and mirror layout."""
    folder = Path(raw_dir) / spec["mirror_subdir"]
    for fname in spec["files"].values():
        target = folder / fname
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(spec["url"], timeout=60) as resp:
                buf = resp.read()
        except Exception as exc:  # noqa: BLE001 - any network failure: one message
            raise _download_error(name, spec, [spec["url"]], [target], exc) from None
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(buf)
    return folder


def check_mirror(name: str, mirror: str | os.PathLike) -> Path:
    """Check that the offline mirror root ``mirror`` exists and holds the folder of dataset ``name``; returns
    that folder, ``<mirror>/<mirror_subdir>/``. (Its files are checked when they are read:
    :func:`missing_mirror_files`.)

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


def missing_mirror_files(name: str, folder: str | os.PathLike) -> MirrorError | None:
    """The error for the files of dataset ``name`` missing from its mirror folder ``folder`` (IDX files: neither
    ``<file>`` nor ``<file>.gz``), or None when every file is there. Its message names every missing file and
    what the folder holds, and shows :func:`mirror_layout`."""
    spec = _spec(name)
    folder = Path(folder)
    gz = spec["format"] == "idx"
    missing = [f for f in spec["files"].values()
               if not ((folder / f).is_file() or (gz and (folder / f"{f}.gz").is_file()))]
    if not missing:
        return None
    expected = ", ".join(f"{folder / f}[.gz]" if gz else str(folder / f) for f in missing)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    held = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
    return MirrorError(f"dataset file missing from the mirror of {name!r}: expected {expected} (the folder "
                       f"holds {held or 'nothing'}); {_layout_text(name)}")


def _layout_text(name: str) -> str:
    return f"the mirror of {name!r} is laid out as\n{mirror_layout(name)}"


def resolve_source(name: str, spec: dict, mirror: str | os.PathLike | None, raw_dir: str | os.PathLike
                    ) -> tuple[Path, str]:
    """Return (folder holding the raw files, human-readable source) for dataset ``name``.

    With ``mirror``: ``<mirror>/<mirror_subdir>/``. Without: download, IDX datasets with torchvision into
    ``<raw_dir>/<TorchvisionClass>/raw/`` (torchvision leaves the decompressed files there), MATLAB ones
    from ``spec["url"]`` into ``<raw_dir>/<mirror_subdir>/``.

    Raises:
        MirrorError: (a FileNotFoundError) the mirror root or its folder for the dataset is missing (names
            it and shows the expected layout; see :func:`check_mirror`).
        DatasetDownloadError: the download failed (names the dataset, URL, file expected, mirror layout).
    """
    if mirror is not None:
        folder = check_mirror(name, mirror)
        return folder, str(folder.resolve())
    if spec["format"] == "mat":
        return _download_mat(name, spec, raw_dir), spec["url"]
    import torchvision.datasets  # lazy: importing torchvision takes seconds

    cls = getattr(torchvision.datasets, spec["torchvision_class"])
    folder = Path(raw_dir) / spec["torchvision_class"] / "raw"
    urls = [cls.mirrors[0] + f + ".gz" for f in spec["files"].values()]
    try:
        cls(root=str(raw_dir), train=True, download=True)  # downloads all four files, checks gz MD5s
    except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError / URLError / OSError
        raise _download_error(name, spec, urls, [folder / f for f in spec["files"].values()], exc) from None
    return folder, " ".join(urls)


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
    sums = {"MD5": (spec["md5"][fname], hashlib.md5(buf).hexdigest()),
            "SHA-256": (spec["sha256"][fname], hashlib.sha256(buf).hexdigest())}
    for algo, (expected, actual) in sums.items():
        if actual != expected:
            raise DataIntegrityError(f"{algo} mismatch for {path}: expected {expected}, got {actual}")
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
    return images, {fname: sums["SHA-256"][1]}


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
        path = find_file(folder, fname)
        buf = read_maybe_gz(path)
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

def prepare_dataset(name: str, cfg: StrictConfig | dict | None, out_path: str | os.PathLike,
                    mirror: str | os.PathLike | None = None, raw_dir: str | os.PathLike = "data/raw") -> dict:
    """Fetch, verify, split and save dataset ``name`` as one ``.npz`` (written atomically).

    Args:
        name: registry key in ``DATASETS`` (``"mnist"``, ``"frey_face"``).
        cfg: the dataset's settings (its class in :data:`DATASET_CONFIGS`; ``max_*`` keeps the first N of a
            split); a dict is validated into that class; None = the defaults.
        out_path: destination ``.npz`` (see the module docstring for its arrays).
        mirror: root of an offline mirror holding ``<mirror>/<mirror_subdir>/<files>`` (see
            :func:`mirror_layout`); ``None`` downloads into ``raw_dir``.
        raw_dir: download root (used only when ``mirror`` is None).
    Returns:
        summary dict: ``dataset``, ``out_path``, ``source``, ``counts`` {train, val, test},
        ``image_shape`` [C, H, W], ``sha256`` {file: digest}.
    Raises:
        KeyError (unknown dataset), ValueError (an invalid setting, named; a split too large),
        MirrorError (a FileNotFoundError: mirror root, folder or file missing, with the expected layout),
        DatasetDownloadError (download failed), DataIntegrityError (checksum mismatch, bad file, a ``.gz``
        that is not valid gzip data). On any error no output file is written (an earlier one is kept as it was).
    """
    spec = _spec(name)
    cfg_cls = spec["config"]
    cfg = (cfg if isinstance(cfg, cfg_cls) else cfg_cls.model_validate(
        cfg.model_dump() if isinstance(cfg, StrictConfig) else cfg or {})).model_dump()
    folder, source = resolve_source(name, spec, mirror, raw_dir)
    try:
        if spec["format"] == "mat":
            splits, extra, split_meta, sums = _split_mat(name, spec, cfg, folder)
        else:
            splits, extra, split_meta, sums = _split_idx(name, cfg, folder)
    except FileNotFoundError:
        missing = missing_mirror_files(name, folder) if mirror is not None else None
        if missing is None:
            raise
        raise missing from None     # the same, with every missing file, the folder's content and the layout

    out = {}
    for split, (x, y) in splits.items():
        out[f"x_{split}"] = np.ascontiguousarray(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2),
                                                 dtype=np.uint8)  # (N,H,W) grey -> (N,1,H,W); (N,H,W,C) -> NCHW
        out[f"y_{split}"] = y.astype(np.int64)
    out.update(extra)
    counts = {split: int(len(out[f"y_{split}"])) for split in splits}
    image_shape = list(out["x_train"].shape[1:])
    labelled = spec.get("n_classes") is not None

    meta = {
        "dataset": name,
        "source": source,
        "sha256": sums,
        "counts": counts,
        "image_shape": image_shape,
        "n_classes": spec.get("n_classes"),
        "labelled": labelled,
        "dtype": "uint8 (0..255), layout N,C,H,W; labels int64" + ("" if labelled else " (-1: unlabelled)"),
        "split": split_meta,
        "config": cfg,
    }
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"dataset": name, "out_path": str(out_path), "source": source, "counts": counts,
            "image_shape": image_shape, "sha256": sums}


def _first(x: np.ndarray, cfg: dict, key: str) -> np.ndarray:
    return x if cfg[key] is None else x[: cfg[key]]


def _split_idx(name: str, cfg: dict, folder: Path) -> tuple[dict, dict, dict, dict]:
    """MNIST's fixed split: validation = the last ``n_validation`` official training images. Returns
    ({split: (images, labels)}, extra arrays, meta["split"], sha256 by file)."""
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
    return splits, {}, split_meta, sums


def frey_face_split(n_images: int, n_validation: int, n_test: int, split_seed: int) -> dict[str, np.ndarray]:
    """The seeded split of an unsplit dataset: ``perm = numpy.random.RandomState(split_seed).permutation(
    n_images)``; test = ``perm[:n_test]``, val = ``perm[n_test:n_test + n_validation]``, train = the rest, each
    sorted. Returns {"train", "val", "test": int64 source indices}, disjoint, covering range(n_images).

    Raises:
        ValueError: ``n_validation + n_test >= n_images`` (no training image left).
    """
    if n_validation + n_test >= n_images:
        raise ValueError(f"n_validation + n_test = {n_validation + n_test} leaves no training image of {n_images}")
    perm = np.random.RandomState(int(split_seed)).permutation(n_images).astype(np.int64)
    return {"train": np.sort(perm[n_test + n_validation:]), "val": np.sort(perm[n_test:n_test + n_validation]),
            "test": np.sort(perm[:n_test])}


def _split_mat(name: str, spec: dict, cfg: dict, folder: Path) -> tuple[dict, dict, dict, dict]:
    """Frey Face's seeded split (:func:`frey_face_split`), then ``max_*``. Returns ({split: (images, labels
    = -1)}, {"source_index_<split>": column indices}, meta["split"], sha256 by file)."""
    images, sums = read_mat_file(name, folder)
    index = frey_face_split(len(images), cfg["n_validation"], cfg["n_test"], cfg["split_seed"])
    caps = {"train": "max_train", "val": "max_validation", "test": "max_test"}
    index = {split: _first(idx, cfg, caps[split]) for split, idx in index.items()}
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
        "index_sha256": {split: hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()
                         for split, idx in index.items()},
    }
    return splits, {f"source_index_{split}": idx for split, idx in index.items()}, split_meta, sums
