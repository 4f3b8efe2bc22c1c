"""CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"; https://www.cs.toronto.edu/
~kriz/cifar.html): the official ``cifar-10-python.tar.gz``, read member by member, each pickled batch checked (MD5)
and then unpickled with :class:`RestrictedUnpickler`."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, PositiveInt

from vaebench.data.common import SPLIT_CAPS, DataIntegrityError, Prepared, first_n
from vaebench.data.fetch import check_digests, verify_file
from vaebench.data.sources import DatasetSource, register_source
from vaebench.errors import one_line
from vaebench.registry import StrictConfig

ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
N_TRAIN = 50000
IMAGE_SHAPE = (3, 32, 32)
ROW = 3 * 32 * 32
MEMBER_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


class Cifar10Config(StrictConfig):
    """How CIFAR-10 is split (validation = the last n_validation official training images) and truncated."""

    n_validation: PositiveInt = Field(5000, lt=N_TRAIN, description=(
        "The last N of the 50,000 official training images (in batch order, data_batch_1 first), held out as "
        "validation."))
    max_train: PositiveInt | None = Field(None, description="Keep the first N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep the first N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test images (null = all).")


def _reconstruct_function():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's uint8 array reconstruction and ``_codecs.encode(text, "latin1")``; any other global
    raises DataIntegrityError naming ``shown``."""

    def __init__(self, file, shown: str):
        super().__init__(file, encoding="latin1")
        self.shown = shown

    def find_class(self, module: str, name: str) -> Any:
        shown = self.shown
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _reconstruct_function()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            def uint8_dtype(spec, *args):
                if spec not in ("u1", b"u1", "|u1", b"|u1"):
                    raise DataIntegrityError(f"{shown}: the pickle builds an array of dtype {spec!r}; the official "
                                             "batches hold uint8 arrays only")
                return np.dtype("u1", *args)
            return uint8_dtype
        if (module, name) == ("_codecs", "encode"):
            def latin1_bytes(text, encoding="utf-8"):
                if encoding != "latin1" or not isinstance(text, str):
                    raise DataIntegrityError(f"{shown}: the pickle calls _codecs.encode with encoding "
                                             f"{encoding!r}; only 'latin1' (bytes in protocol 2) is allowed")
                return text.encode("latin1")
            return latin1_bytes
        raise DataIntegrityError(f"{shown}: the pickle asks for the global {module}.{name}, which the official "
                                 "CIFAR-10 batches never use (only numpy's array reconstruction): refused, nothing "
                                 "of it was run; the file is not an official batch")


def load_batch(buf: bytes, shown: str) -> dict:
    """The dict (str keys) of one verified member, unpickled with :class:`RestrictedUnpickler`.

    Raises:
        DataIntegrityError: a refused global, not a pickle, or not a dict; names ``shown``.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(buf), shown).load()
    except DataIntegrityError:
        raise
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataIntegrityError(f"{shown}: not a readable pickle ({one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise DataIntegrityError(f"{shown}: the pickle holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(d: dict, shown: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one batch; DataIntegrityError names ``shown``."""
    data, labels = d.get("data"), d.get("labels")
    if data is None or labels is None:
        missing = [k for k in ("data", "labels") if d.get(k) is None]
        raise DataIntegrityError(f"{shown}: the batch has no {' or '.join(missing)} entry (keys: "
                                 f"{', '.join(map(str, d))})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        got = f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataIntegrityError(f"{shown}: 'data' should be uint8 of shape (N, {ROW}), got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataIntegrityError(f"{shown}: 'labels' is not a list of integers") from None
    if y.shape != (len(data),):
        raise DataIntegrityError(f"{shown}: {len(data)} images but 'labels' has shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataIntegrityError(f"{shown}: labels outside 0..9 (min {y.min()}, max {y.max()})")
    return data.reshape(-1, *IMAGE_SHAPE), y


def read_cifar10(source: DatasetSource, folder: str | Path
                 ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], dict[str, str]]:
    """Verify and read the archive in ``folder``: ({"train": (images uint8 (50000, 3, 32, 32) in batch order,
    labels int64), "test": (10000 ...)}, 10 class names, {archive: SHA-256}).

    Raises:
        FileNotFoundError: the archive is missing.
        DataIntegrityError: a checksum mismatch (archive or member), a member missing, twice or not a regular
            file, an unreadable archive, a refused or bad pickle, wrong shapes or labels.
    """
    folder = Path(folder)
    path = folder / ARCHIVE
    digests = verify_file(source, folder, ARCHIVE)
    wanted = {f"{FOLDER}/{m}": m for m in (*TRAIN_BATCHES, TEST_BATCH, META)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    classes: list[str] = []
    member = None
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name not in wanted:
                    continue
                short = wanted[name]
                shown = f"{name} (in {path})"
                if not member.isfile():
                    raise DataIntegrityError(f"{shown}: a link or special file, not a regular file")
                if short in batches or (short == META and classes):
                    raise DataIntegrityError(f"{shown}: the archive holds this member twice")
                buf = tar.extractfile(member).read()
                check_digests(shown, {"md5": MEMBER_MD5[short]}, {"md5": hashlib.md5(buf).hexdigest()})
                d = load_batch(buf, shown)
                del buf
                if short == META:
                    names = d.get("label_names")
                    if not isinstance(names, list) or len(names) != 10:
                        raise DataIntegrityError(f"{shown}: 'label_names' should be a list of 10 class names")
                    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
                else:
                    batches[short] = _batch_arrays(d, shown)
    except DataIntegrityError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        after = f" after member {member.name}" if member is not None else ""
        raise DataIntegrityError(f"{path}: not a readable tar.gz archive ({one_line(exc)}){after}") from None
    missing = [f"{FOLDER}/{m}" for m in (*TRAIN_BATCHES, TEST_BATCH) if m not in batches]
    if not classes:
        missing.append(f"{FOLDER}/{META}")
    if missing:
        raise DataIntegrityError(f"{path}: the archive lacks {', '.join(missing)}")
    x_train = np.concatenate([batches[m][0] for m in TRAIN_BATCHES])
    y_train = np.concatenate([batches[m][1] for m in TRAIN_BATCHES])
    return ({"train": (x_train, y_train), "test": batches[TEST_BATCH]}, classes, {ARCHIVE: digests["sha256"]})


def prepare_cifar10(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """The fixed split: validation = the last ``n_validation`` training images (batch order), test =
    ``test_batch``; then ``max_*`` keeps the first N. Images (N, 3, 32, 32), labels 0..9, ``meta["classes"]``.

    Raises:
        see :func:`read_cifar10`; ValueError: ``n_validation`` not below the training set size.
    """
    arrays, classes, sums = read_cifar10(source, folder)
    x_full, y_full = arrays["train"]
    n_full, n_val = len(x_full), cfg["n_validation"]
    if n_val >= n_full:
        raise ValueError(f"n_validation={n_val} must be smaller than the official training set ({n_full})")
    n_train = n_full - n_val
    parts = {"train": (x_full[:n_train], y_full[:n_train]), "val": (x_full[n_train:], y_full[n_train:]),
             "test": arrays["test"]}
    splits = {s: (first_n(x, cfg[SPLIT_CAPS[s]]), first_n(y, cfg[SPLIT_CAPS[s]])) for s, (x, y) in parts.items()}
    counts = {s: len(v[0]) for s, v in splits.items()}
    split_meta = {
        "description": (f"validation = the last {n_val} of the {n_full} official training images in batch order "
                        f"data_batch_1..5 (indices {n_train}..{n_full - 1}); train = the first {n_train}; test = "
                        "test_batch; then max_* keeps the first N of a split"),
        "rule": "fixed: the last n_validation official training images (batch order) are the validation split",
        "train_source_indices": [0, counts["train"]],
        "val_source_indices": [n_train, n_train + counts["val"]],
        "test_source_indices": [0, counts["test"]],
    }
    return Prepared(splits, split_meta, sums, more_meta={"classes": classes})


SOURCE = register_source(DatasetSource(
    name="cifar10",
    config=Cifar10Config,
    reader=prepare_cifar10,
    citation=('Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images", University of Toronto; '
              "https://www.cs.toronto.edu/~kriz/cifar.html"),
    mirror_subdir="cifar10",
    files={"archive": ARCHIVE},
    urls={ARCHIVE: URL},
    md5={ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
    image_shape=IMAGE_SHAPE,
    n_classes=10,
))
