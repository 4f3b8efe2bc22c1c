"""The registered datasets whose real files are not available here (Fashion-MNIST, CIFAR-10, SVHN, CelebA), each on
small synthetic files written in exactly the official format under the official names (gzipped IDX; a
``cifar-10-python.tar.gz`` of Python-2-style protocol-2 pickles; MATLAB v5 ``.mat`` files; a zip of 178x218 JPEGs
with the partition list), with the recorded checksums patched to the synthetic files' sums:

* pixels land at the right (n, c, h, w) (every pixel of every image is a distinct function of its index, channel,
  row and column, so a transposition or a channel-order slip fails), labels (SVHN's 10 -> 0), split rule and counts,
  meta, image shape (SVHN 28 / 32, CelebA 32 / 64), the crop and resize against an independent Pillow computation;
* the REAL recorded sums refuse the synthetic files naming the file and both sums; malformed files (bad pickle
  content, a pickle calling os.system, wrong shapes, bad partition lines, an image of the wrong size) are named;
* mirror errors, the one-message download failure that leaves no ``raw`` folder or partial file, CelebA's refusal.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
import types
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaebench.data import celeba, cifar10, svhn
from vaebench.data import (SOURCES, DataIntegrityError, DatasetDownloadError, MirrorError, check_mirror, dataset_spec,
                           mirror_layout, missing_mirror_files, prepare_dataset)
from vaebench.data.prepared import load_prepared


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel(i: int, c: int, h: int, w: int) -> np.ndarray:
    """The value of pixel (c, h, w) of synthetic image i (broadcasts): differs under any swap of h and w (3 (h - w)
    is never 0 mod 256 for h != w < 32) or of channels."""
    return (7 * np.asarray(i) + 61 * np.asarray(c) + 5 * np.asarray(h) + 2 * np.asarray(w)) % 256


def images(first: int, n: int, channels: int, size: int) -> np.ndarray:
    """Synthetic images first..first + n - 1 as uint8 (n, C, H, W)."""
    i, c, h, w = np.meshgrid(np.arange(first, first + n), np.arange(channels), np.arange(size), np.arange(size),
                             indexing="ij")
    return pixel(i, c, h, w).astype(np.uint8)


def patch_sums(monkeypatch, name: str, folder: Path, files) -> None:
    for f in files:
        monkeypatch.setitem(SOURCES[name].md5, f, md5(folder / f))


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -----------------------------------------------------------------------------
# Fashion-MNIST: gzipped IDX

def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of uint8 data: 0, 0, type 0x08, ndim, big-endian int32 sizes, the data in C order."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape) + a.astype(np.uint8).tobytes()


FASHION_TRAIN, FASHION_TEST = 12, 5


def fashion_labels(first: int, n: int) -> np.ndarray:
    return (np.arange(first, first + n) * 3) % 10


@pytest.fixture
def fashion(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "mirror" / "fashion_mnist"
    folder.mkdir(parents=True)
    files = SOURCES["fashion_mnist"].files
    content = {"train_images": images(0, FASHION_TRAIN, 1, 28)[:, 0], "train_labels": fashion_labels(0, FASHION_TRAIN),
               "test_images": images(100, FASHION_TEST, 1, 28)[:, 0], "test_labels": fashion_labels(100, FASHION_TEST)}
    for role, fname in files.items():
        (folder / fname).write_bytes(gzip.compress(idx_bytes(content[role])))
    patch_sums(monkeypatch, "fashion_mnist", folder, files.values())
    return folder


def test_fashion_mnist_pixels_labels_split_and_meta(fashion, tmp_path):
    out = tmp_path / "out" / "fashion_mnist.npz"
    summary = prepare_dataset("fashion_mnist", {"n_validation": 4, "max_test": 3}, out, mirror=fashion.parent)
    d = load_prepared(out)
    assert summary["counts"] == d["meta"]["counts"] == {"train": 8, "val": 4, "test": 3}
    np.testing.assert_array_equal(d["x_train"], images(0, 8, 1, 28))              # validation = the LAST 4
    np.testing.assert_array_equal(d["x_val"], images(8, 4, 1, 28))
    np.testing.assert_array_equal(d["x_test"], images(100, 3, 1, 28))
    np.testing.assert_array_equal(d["y_val"], fashion_labels(8, 4))
    np.testing.assert_array_equal(d["y_test"], fashion_labels(100, 3))
    meta = d["meta"]
    assert meta["image_shape"] == [1, 28, 28] and meta["n_classes"] == 10 and meta["labelled"] is True
    assert meta["classes"][0] == "T-shirt/top" and len(meta["classes"]) == 10
    assert meta["sha256"] == {f: sha256(fashion / f) for f in SOURCES["fashion_mnist"].files.values()}
    assert meta["split"]["val_source_indices"] == [8, 12] and "the last 4" in meta["split"]["description"]
    assert only(out.parent) == ["fashion_mnist.npz"]


def test_fashion_mnist_real_sums_and_uncompressed_copies_are_refused(fashion, tmp_path, monkeypatch):
    monkeypatch.undo()                        # the official MD5s again
    name = "train-images-idx3-ubyte.gz"
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("fashion_mnist", {"n_validation": 4}, tmp_path / "o" / "f.npz", mirror=fashion.parent)
    assert str(err.value) == (f"MD5 mismatch for {fashion / name}: expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d, got "
                              f"{md5(fashion / name)}")
    # a mirror holding a decompressed file: no recorded sum for it, so it is refused with what to do
    gz = fashion / "t10k-labels-idx1-ubyte.gz"
    (fashion / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    with pytest.raises(MirrorError) as err:
        prepare_dataset("fashion_mnist", {"n_validation": 4}, tmp_path / "o" / "f.npz", mirror=fashion.parent)
    msg = str(err.value)
    assert f"expected {fashion / 't10k-labels-idx1-ubyte.gz'}" in msg
    assert "t10k-labels-idx1-ubyte is there decompressed, which cannot be verified" in msg
    assert "the mirror must hold the official .gz files" in msg and msg.endswith(
        "<mirror>/fashion_mnist/t10k-labels-idx1-ubyte.gz")
    assert not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------
# CIFAR-10: a tar.gz of pickles

def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2's cPickle wrote the official batches (protocol 2): str as (SHORT_)BINSTRING, the
    uint8 array through ``numpy.core.multiarray._reconstruct`` / ``numpy.ndarray`` / ``numpy.dtype``."""
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def emit(o) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, str):
            string(o.encode("latin1"))
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        else:                                  # a C-ordered uint8 array
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            string(b"b")
            out.extend(b"\x87R(K\x01")
            for size in o.shape:
                emit(int(size))
            out.extend(b"\x86cnumpy\ndtype\n")
            string(b"u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")
            string(b"|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            string(o.tobytes())
            out.extend(b"tb")

    emit(obj)
    out.extend(b".")
    return bytes(out)


CIFAR_PER_BATCH, CIFAR_TEST = 4, 6
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_rows(first: int, n: int) -> np.ndarray:
    """The official row layout written independently of the reader: value of (c, h, w) at c * 1024 + h * 32 + w."""
    rows = np.zeros((n, 3072), np.uint8)
    for k in range(n):
        for c in range(3):
            for h in range(32):
                rows[k, c * 1024 + h * 32: c * 1024 + h * 32 + 32] = pixel(first + k, c, h, np.arange(32))
    return rows


def cifar_labels(first: int, n: int) -> list[int]:
    return [int(v) for v in (np.arange(first, first + n) * 7) % 10]


def cifar_member(short: str) -> bytes:
    """The content of member ``short``: data_batch_1 and batches.meta as Python 2 wrote them, the other batches as
    a Python 3 protocol-2 pickle with bytes keys (how a re-pickled copy looks)."""
    if short == "batches.meta":
        return py2_pickle({"num_cases_per_batch": CIFAR_PER_BATCH, "label_names": CLASSES, "num_vis": 3072})
    if short == "test_batch":
        first, n, label = 1000, CIFAR_TEST, "testing batch 1 of 1"
    else:
        b = int(short[-1])
        first, n, label = (b - 1) * CIFAR_PER_BATCH, CIFAR_PER_BATCH, f"training batch {b} of 5"
    d = {"batch_label": label, "labels": cifar_labels(first, n), "data": cifar_rows(first, n),
         "filenames": [f"img_{first + k}.png" for k in range(n)]}
    if short == "data_batch_1":
        return py2_pickle(d)
    return pickle.dumps({k.encode(): v for k, v in d.items()}, protocol=2)


def write_cifar(folder: Path, replace: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cifar10.ARCHIVE
    members = {m: cifar_member(m) for m in ("batches.meta", *cifar10.TRAIN_BATCHES, "test_batch")}
    members.update(replace or {})
    members["readme.html"] = b"<html>synthetic</html>"
    with tarfile.open(path, "w:gz") as tar:
        for m, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{m}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    def make(replace=None) -> Path:
        folder = tmp_path / "mirror" / "cifar10"
        path = write_cifar(folder, replace)
        monkeypatch.setitem(cifar10.SOURCE.md5, cifar10.ARCHIVE, md5(path))
        with tarfile.open(path) as tar:
            for m in tar:
                short = m.name.split("/")[-1]
                if short in cifar10.MEMBER_MD5:
                    monkeypatch.setitem(cifar10.MEMBER_MD5, short,
                                        hashlib.md5(tar.extractfile(m).read()).hexdigest())
        return folder
    return make


def test_cifar10_pixels_labels_split_classes_and_meta(cifar, tmp_path):
    folder = cifar()
    out = tmp_path / "out" / "cifar10.npz"
    summary = prepare_dataset("cifar10", {"n_validation": 6, "max_train": 13}, out, mirror=folder.parent)
    d = load_prepared(out)
    assert summary["counts"] == d["meta"]["counts"] == {"train": 13, "val": 6, "test": CIFAR_TEST}
    # batch order: data_batch_1's 4 images are 0..3, ..., the last 6 of the 20 (14..19) are the validation split
    np.testing.assert_array_equal(d["x_train"], images(0, 13, 3, 32))
    np.testing.assert_array_equal(d["x_val"], images(14, 6, 3, 32))
    np.testing.assert_array_equal(d["x_test"], images(1000, CIFAR_TEST, 3, 32))
    assert d["y_train"].tolist() == cifar_labels(0, 13) and d["y_val"].tolist() == cifar_labels(14, 6)
    assert d["y_test"].tolist() == cifar_labels(1000, CIFAR_TEST)
    meta = d["meta"]
    assert meta["classes"] == CLASSES and meta["n_classes"] == 10 and meta["labelled"] is True
    assert meta["image_shape"] == [3, 32, 32] and meta["sha256"] == {cifar10.ARCHIVE: sha256(folder / cifar10.ARCHIVE)}
    assert meta["split"]["val_source_indices"] == [14, 20] and "data_batch_1..5" in meta["split"]["description"]


def test_cifar10_real_sums_refuse_the_synthetic_archive_and_members(cifar, tmp_path, monkeypatch):
    folder = cifar()
    path = folder / cifar10.ARCHIVE
    monkeypatch.setitem(cifar10.MEMBER_MD5, "data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec")
    with pytest.raises(DataIntegrityError) as err:       # the archive is fine, one member is not the official one
        prepare_dataset("cifar10", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
    assert str(err.value).startswith(f"MD5 mismatch for cifar-10-batches-py/data_batch_2 (in {path}): expected "
                                     "d4bba439e000b95fd0a9bffe97cbabec, got ")
    monkeypatch.setitem(cifar10.SOURCE.md5, cifar10.ARCHIVE, "c58f30108f718f92721af3b95e74349a")
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("cifar10", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
    assert str(err.value) == f"MD5 mismatch for {path}: expected c58f30108f718f92721af3b95e74349a, got {md5(path)}"
    assert not (tmp_path / "o").exists()


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_malicious_and_malformed_pickles_are_refused_without_running(cifar, tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps({b"data": RunsACommand(marker), b"labels": []}, protocol=2)
    folder = cifar({"data_batch_3": evil})          # checksums patched: only the unpickler stands in the way
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("cifar10", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
    msg = str(err.value)
    assert msg.startswith(f"cifar-10-batches-py/data_batch_3 (in {folder / cifar10.ARCHIVE}): the pickle asks for the "
                          f"global {os.system.__module__}.system"), msg
    assert "refused, nothing of it was run" in msg and not marker.exists()
    # other globals and other dtypes are refused too, by the unpickler alone
    for bad, wording in ((pickle.dumps(print, protocol=2), r"__builtin__\.print"),     # Python 2's name of builtins
                         (pickle.dumps(np.zeros(3, np.float64), protocol=2), "dtype 'f8'"),
                         (b"\x80\x02}q\x00(", "not a readable pickle")):
        with pytest.raises(DataIntegrityError, match=f"^member x: .*{wording}"):
            cifar10.load_batch(bad, "member x")
    # well-formed pickles of the wrong content
    cases = {
        "wrong row length": ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
                             "'data' should be uint8 of shape (N, 3072), got uint8 of shape (4, 3000)"),
        "labels short": ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3},
                         "4 images but 'labels' has shape (3,)"),
        "no labels": ({b"data": np.zeros((4, 3072), np.uint8)}, "the batch has no labels entry"),
        "label 10": ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, "labels outside 0..9"),
    }
    for content, wording in cases.values():
        folder = cifar({"test_batch": pickle.dumps(content, protocol=2)})
        with pytest.raises(DataIntegrityError) as err:
            prepare_dataset("cifar10", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
        assert str(err.value).startswith(f"cifar-10-batches-py/test_batch (in {folder / cifar10.ARCHIVE}): {wording}")
    assert not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------
# SVHN: MATLAB v5 files

SVHN_COUNTS = {"train": 40, "test": 10, "extra": 12}
SVHN_FIRST = {"train": 0, "test": 500, "extra": 1000}


def svhn_labels(role: str) -> np.ndarray:
    return (np.arange(SVHN_COUNTS[role]) + SVHN_FIRST[role]) % 10 + 1           # 1..10, 10 = digit 0


def write_svhn_file(path: Path, role: str, **override) -> None:
    from scipy.io import savemat

    n, first = SVHN_COUNTS[role], SVHN_FIRST[role]
    h, w, c, i = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), np.arange(first, first + n), indexing="ij")
    content = {"X": pixel(i, c, h, w).astype(np.uint8),                         # (row, column, channel, image)
               "y": svhn_labels(role).astype(np.uint8).reshape(n, 1)}
    content.update(override)
    savemat(str(path), content, format="5")


@pytest.fixture
def svhn_mirror(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "mirror" / "svhn"
    folder.mkdir(parents=True)
    for role, fname in svhn.FILES.items():
        write_svhn_file(folder / fname, role)
    patch_sums(monkeypatch, "svhn", folder, svhn.FILES.values())
    return folder


def test_svhn_pixels_labels_seeded_split_and_meta(svhn_mirror, tmp_path):
    out = tmp_path / "out" / "svhn.npz"
    prepare_dataset("svhn", {"n_validation": 7, "split_seed": 3}, out, mirror=svhn_mirror.parent)
    d = load_prepared(out)
    perm = np.random.RandomState(3).permutation(40)
    val, train = np.sort(perm[:7]), np.sort(perm[7:])
    idx = {"train": train, "val": val, "test": np.arange(10)}
    for split, source in idx.items():
        np.testing.assert_array_equal(d[f"source_index_{split}"], source)
        role = "test" if split == "test" else "train"
        np.testing.assert_array_equal(d[f"x_{split}"], images(SVHN_FIRST[role], SVHN_COUNTS[role], 3, 32)[source])
        labels = svhn_labels(role)[source] % 10                                  # 10 -> 0
        np.testing.assert_array_equal(d[f"y_{split}"], labels)
    assert set(d["y_train"].tolist()) | set(d["y_val"].tolist()) == set(range(10))
    meta = d["meta"]
    assert meta["counts"] == {"train": 33, "val": 7, "test": 10} and meta["image_shape"] == [3, 32, 32]
    assert meta["n_classes"] == 10 and meta["labelled"] is True and meta["split"]["seed"] == 3
    assert "RandomState(3).permutation(40)" in meta["split"]["description"]
    assert meta["split"]["n_source_images"] == {"train_32x32.mat": 40, "test_32x32.mat": 10}
    assert meta["sha256"] == {f: sha256(svhn_mirror / f) for f in ("train_32x32.mat", "test_32x32.mat")}


def test_svhn_28_is_pillow_bilinear_and_extra_is_appended(svhn_mirror, tmp_path):
    assert dataset_spec("svhn", {"image_size": 28})["image_shape"] == (3, 28, 28)
    assert dataset_spec("svhn", None)["image_shape"] == (3, 32, 32)
    out = tmp_path / "out" / "svhn.npz"
    prepare_dataset("svhn", {"image_size": 28, "extra": True, "n_validation": 5, "max_train": 30},
                    out, mirror=svhn_mirror.parent)
    d = load_prepared(out)
    assert d["meta"]["image_shape"] == [3, 28, 28] and d["x_train"].shape == (30, 3, 28, 28)
    assert "Image.Resampling.BILINEAR" in d["meta"]["preprocessing"]
    train = np.sort(np.random.RandomState(0).permutation(40)[5:])
    pool = np.concatenate([train, 40 + np.arange(12)])                            # the extra images follow
    kept = pool[np.sort(np.random.RandomState(0).permutation(len(pool))[:30])]   # max_train: a seeded subset
    np.testing.assert_array_equal(d["source_index_train"], kept)
    assert (kept >= 40).any() and (kept < 40).any()
    src = {"train": images(0, 40, 3, 32), "extra": images(1000, 12, 3, 32)}
    for k, s in enumerate(kept):
        role, j = ("train", s) if s < 40 else ("extra", s - 40)
        expected = Image.fromarray(src[role][j].transpose(1, 2, 0)).resize((28, 28), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(d["x_train"][k], np.asarray(expected).transpose(2, 0, 1))
        assert d["y_train"][k] == svhn_labels(role)[j] % 10
    assert d["meta"]["split"]["n_source_images"]["extra_32x32.mat"] == 12


def test_svhn_missing_extra_bad_files_and_real_sums(svhn_mirror, tmp_path, monkeypatch):
    (svhn_mirror / "extra_32x32.mat").unlink()
    prepare_dataset("svhn", {"n_validation": 5}, tmp_path / "ok.npz", mirror=svhn_mirror.parent)   # not needed
    with pytest.raises(MirrorError) as err:
        prepare_dataset("svhn", {"extra": True}, tmp_path / "o" / "s.npz", mirror=svhn_mirror.parent)
    assert str(err.value).startswith(f"dataset file missing from the mirror of 'svhn': expected "
                                     f"{svhn_mirror / 'extra_32x32.mat'} (read with extra: true)")
    bad = {"label_11": ({"y": np.full((40, 1), 11, np.uint8)}, "labels of 'y' should be the integers 1..10"),
           "no_y": ({"y": None}, "variable 'y' should be numbers of shape (40, 1), got absent"),
           "X_grey": ({"X": np.zeros((32, 32, 1, 40), np.uint8)},
                      "variable 'X' should be uint8 of shape (32, 32, 3, N), got of shape (32, 32, 1, 40)"),
           "one_image_less": ({"X": np.zeros((32, 32, 3, 39), np.uint8)},
                              "variable 'y' should be numbers of shape (39, 1), got uint8 of shape (40, 1)"),
           "X_float": ({"X": np.zeros((32, 32, 3, 40), np.float64)}, "variable 'X' should be uint8")}
    path = svhn_mirror / "train_32x32.mat"
    for override, wording in bad.values():
        write_svhn_file(path, "train", **{k: v for k, v in override.items() if v is not None})
        if "y" in override and override["y"] is None:
            from scipy.io import loadmat, savemat

            savemat(str(path), {"X": loadmat(str(path))["X"]}, format="5")
        monkeypatch.setitem(SOURCES["svhn"].md5, path.name, md5(path))
        with pytest.raises(DataIntegrityError) as err:
            prepare_dataset("svhn", {"n_validation": 5}, tmp_path / "o" / "s.npz", mirror=svhn_mirror.parent)
        assert str(err.value).startswith(f"{path}: {wording}"), str(err.value)
    monkeypatch.setitem(SOURCES["svhn"].md5, path.name, "e26dedcc434d2e4c54c9b2d4a06d8373")
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("svhn", {}, tmp_path / "o" / "s.npz", mirror=svhn_mirror.parent)
    assert str(err.value) == f"MD5 mismatch for {path}: expected e26dedcc434d2e4c54c9b2d4a06d8373, got {md5(path)}"
    assert not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------
# CelebA: a zip of aligned JPEGs and the partition list

CELEBA_PARTS = [0, 0, 1, 2, 0, 0, 2, 1, 0, 2, 0, 1]       # 6 train, 3 validation, 3 test, interleaved


def face(i: int) -> np.ndarray:
    """A 218 x 178 (height x width) RGB image: a red top-left, green top-right, blue bottom block (so an upside-down
    or mirrored image, or swapped channels, is seen) with a smooth per-image gradient."""
    h, w = np.mgrid[0:218, 0:178]
    img = np.zeros((218, 178, 3), np.uint8)
    top, left = h < 109, w < 89
    img[top & left, 0] = 220
    img[top & ~left, 1] = 220
    img[~top, 2] = 220
    img[..., 0] = np.maximum(img[..., 0], (h // 4 + 5 * i) % 60)
    img[..., 1] = np.maximum(img[..., 1], (w // 4 + 3 * i) % 60)
    return img


def jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def celeba_mirror(tmp_path, monkeypatch):
    def make(jpegs: dict[str, bytes] | None = None, partition: str | None = None) -> Path:
        folder = tmp_path / "mirror" / "celeba"
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"{i + 1:06d}.jpg" for i in range(len(CELEBA_PARTS))]
        with zipfile.ZipFile(folder / celeba.ZIP, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("img_align_celeba/", b"")
            for i, n in enumerate(names):
                zf.writestr(f"img_align_celeba/{n}", (jpegs or {}).get(n) or jpeg(face(i)))
        text = partition if partition is not None else "".join(f"{n} {p}\n" for n, p in zip(names, CELEBA_PARTS))
        (folder / celeba.PARTITION).write_text(text)
        patch_sums(monkeypatch, "celeba", folder, (celeba.ZIP, celeba.PARTITION))
        return folder
    return make


def expected_face(i: int, crop_box: tuple, size: int) -> np.ndarray:
    """Independently: decode the same JPEG bytes with Pillow, crop the box, resize bilinearly, to (3, size, size)."""
    img = Image.open(io.BytesIO(jpeg(face(i)))).convert("RGB").crop(crop_box)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


@pytest.mark.parametrize("settings,box,size", [({}, (15, 35, 163, 183), 64),
                                               ({"image_size": 32, "crop": 100}, (39, 59, 139, 159), 32)])
def test_celeba_official_split_crop_resize_and_meta(celeba_mirror, tmp_path, settings, box, size):
    folder = celeba_mirror()
    assert celeba.crop_box(settings.get("crop", 148)) == box
    assert dataset_spec("celeba", settings)["image_shape"] == (3, size, size)
    out = tmp_path / "out" / "celeba.npz"
    prepare_dataset("celeba", settings, out, mirror=folder.parent)
    d = load_prepared(out)
    parts = np.array(CELEBA_PARTS)
    for split, p in (("train", 0), ("val", 1), ("test", 2)):
        source = np.flatnonzero(parts == p)
        np.testing.assert_array_equal(d[f"source_index_{split}"], source)
        assert d[f"x_{split}"].shape == (len(source), 3, size, size) and (d[f"y_{split}"] == -1).all()
        for k, i in enumerate(source):
            np.testing.assert_array_equal(d[f"x_{split}"][k], expected_face(i, box, size))
    # orientation and channel order: the red block top-left, green top-right, blue at the bottom
    x = d["x_train"][0].astype(int)
    q = size // 8
    assert x[0, q, q] > 180 and x[1, q, -q] > 180 and x[2, -q, size // 2] > 180
    assert x[1, q, q] < 100 and x[0, q, -q] < 100 and x[0, -q, size // 2] < 100
    meta = d["meta"]
    assert meta["n_classes"] is None and meta["labelled"] is False and meta["image_shape"] == [3, size, size]
    assert meta["counts"] == {"train": 6, "val": 3, "test": 3}
    assert meta["split"]["n_source_images"] == {"train": 6, "val": 3, "test": 3}
    assert f"centre crop {box[2] - box[0]}x" in meta["preprocessing"]
    assert meta["sha256"] == {f: sha256(folder / f) for f in (celeba.ZIP, celeba.PARTITION)}


def test_celeba_seeded_subset_and_malformed_files(celeba_mirror, tmp_path):
    folder = celeba_mirror()
    prepare_dataset("celeba", {"max_train": 4, "split_seed": 2}, tmp_path / "s.npz", mirror=folder.parent)
    train = np.flatnonzero(np.array(CELEBA_PARTS) == 0)
    np.testing.assert_array_equal(load_prepared(tmp_path / "s.npz")["source_index_train"],
                                  train[np.sort(np.random.RandomState(2).permutation(6)[:4])])
    zpath = folder / celeba.ZIP
    lines = "".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(CELEBA_PARTS))
    cases = [
        ({"jpegs": {"000005.jpg": jpeg(np.zeros((218, 177, 3), np.uint8))}},
         f"img_align_celeba/000005.jpg (in {zpath}): image is 177x218 (width x height), the aligned CelebA images "
         "are 178x218"),
        ({"jpegs": {"000002.jpg": b"not a jpeg"}}, f"img_align_celeba/000002.jpg (in {zpath}): not a readable image"),
        ({"partition": lines.replace("000003.jpg 1", "000003.jpg 3")},
         f"{folder / celeba.PARTITION}: line 3 is '000003.jpg 3', expected '<6 digits>.jpg <0|1|2>'"),
        ({"partition": lines + "000013.jpg 0\n"},
         f"{zpath}: lacks 1 image(s) listed in {celeba.PARTITION}, e.g. img_align_celeba/000013.jpg"),
        ({"partition": lines + "000001.jpg 0\n"},
         f"{folder / celeba.PARTITION}: line 13 lists 000001.jpg a second time"),
    ]
    for kwargs, wording in cases:
        folder = celeba_mirror(**kwargs)
        with pytest.raises(DataIntegrityError) as err:
            prepare_dataset("celeba", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
        assert str(err.value).startswith(wording), str(err.value)
    assert not (tmp_path / "o").exists()


def test_celeba_real_sums_and_refused_download(celeba_mirror, tmp_path, monkeypatch):
    folder = celeba_mirror()
    monkeypatch.setitem(SOURCES["celeba"].md5, celeba.ZIP, "00d2c5bc6d35e252742224ab0c1e8fcb")
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("celeba", {}, tmp_path / "o" / "c.npz", mirror=folder.parent)
    assert str(err.value) == (f"MD5 mismatch for {folder / celeba.ZIP}: expected 00d2c5bc6d35e252742224ab0c1e8fcb, "
                              f"got {md5(folder / celeba.ZIP)}")

    def no_network(*args, **kwargs):
        raise AssertionError("CelebA must not be downloaded")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DatasetDownloadError) as err:
        prepare_dataset("celeba", {}, tmp_path / "o" / "c.npz", mirror=None, raw_dir=tmp_path / "raw")
    msg = str(err.value)
    for part in ("'celeba'", "Google Drive", "refuses automated downloads", "quota",
                 "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html", "<mirror>/celeba/img_align_celeba.zip\n",
                 "<mirror>/celeba/list_eval_partition.txt\n", "--mirror <mirror>", "VAEBENCH_DATA_MIRROR"):
        assert part in msg, part
    assert not (tmp_path / "raw").exists() and not (tmp_path / "o").exists()


# -----------------------------------------------------------------------------
# Mirror layout and errors, downloads

def test_mirror_layout_and_missing_parts_for_every_dataset(tmp_path):
    assert mirror_layout(SOURCES["cifar10"]) == "  <mirror>/cifar10/cifar-10-python.tar.gz"
    assert mirror_layout(SOURCES["svhn"]) == ("  <mirror>/svhn/train_32x32.mat\n  <mirror>/svhn/test_32x32.mat\n"
                                              "  <mirror>/svhn/extra_32x32.mat   (optional: read only with extra: true)")
    assert (mirror_layout(SOURCES["fashion_mnist"]).splitlines()[0]
            == "  <mirror>/fashion_mnist/train-images-idx3-ubyte.gz")
    assert mirror_layout(SOURCES["celeba"]) == ("  <mirror>/celeba/img_align_celeba.zip\n"
                                                "  <mirror>/celeba/list_eval_partition.txt")
    root = tmp_path / "mirror"
    root.mkdir()
    for name, spec in SOURCES.items():
        folder = root / spec.mirror_subdir
        if not folder.exists():             # a source that reads another's files shares its folder (moving_mnist)
            with pytest.raises(MirrorError, match=f"dataset mirror folder missing for '{name}'"):
                check_mirror(spec, root)
            folder.mkdir()
        assert check_mirror(spec, root) == folder
        err = missing_mirror_files(spec, folder)
        first = next(iter(spec.files.values()))
        assert isinstance(err, MirrorError) and str(folder / first) in str(err)
        assert str(err).endswith(mirror_layout(spec)) and "optional" not in str(err).split(";")[0]
        with pytest.raises(FileNotFoundError, match=f"dataset file missing from the mirror of '{name}'"):
            prepare_dataset(name, None, tmp_path / "o" / f"{name}.npz", mirror=root)
    assert not (tmp_path / "o").exists()


class FakeResponse(io.BytesIO):
    """An urlopen response whose body breaks after ``good`` bytes when ``fail`` is set."""

    def __init__(self, data: bytes, fail: bool = False):
        super().__init__(data)
        self.fail = fail

    def read(self, n=-1):
        if self.fail and self.tell() > 0:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "svhn", "frey_face"])
def test_failed_download_is_one_message_and_leaves_nothing(tmp_path, monkeypatch, name):
    """The first file arrives whole, the second breaks mid-stream (or the only one does): one DatasetDownloadError,
    and no file and no folder of the attempt left (the raw root did not exist before)."""
    spec = SOURCES[name]
    files = list(spec.files.values())[:2] if name != "svhn" else ["train_32x32.mat", "test_32x32.mat"]
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(b"x" * (3 << 20), fail=len(calls) == len(files) or len(spec.files) == 1)

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    for f in spec.md5:
        monkeypatch.setitem(spec.md5, f, hashlib.md5(b"x" * (3 << 20)).hexdigest())
    raw = tmp_path / "data" / "raw"
    with pytest.raises(DatasetDownloadError) as err:
        prepare_dataset(name, {}, tmp_path / "o.npz", mirror=None, raw_dir=raw)
    msg = str(err.value)
    assert msg.startswith(f"could not download dataset '{name}': tried {', '.join(calls)} (ConnectionResetError: "
                          "connection reset by peer); expected file(s) "), msg
    assert calls == [spec.urls[f] for f in files[:len(calls)]]
    for f in files:
        assert str(raw / spec.mirror_subdir / f) in msg
    assert msg.endswith(f"laid out as\n{mirror_layout(spec)}\nand pass --mirror <mirror> (or set "
                        "VAEBENCH_DATA_MIRROR).")
    assert "\n" not in msg.split(" Without internet access")[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "o.npz").exists()


def test_failed_download_keeps_what_was_there_and_checks_the_md5(tmp_path, monkeypatch):
    """A raw folder that existed keeps its files; a downloaded file with another MD5 is not kept."""
    folder = tmp_path / "raw" / "cifar10"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: FakeResponse(b"not the archive"))
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("cifar10", {}, tmp_path / "o.npz", raw_dir=tmp_path / "raw")
    assert str(err.value) == (f"MD5 mismatch for {cifar10.URL} (downloaded as {folder / cifar10.ARCHIVE}; not kept): "
                              "expected c58f30108f718f92721af3b95e74349a, got "
                              f"{hashlib.md5(b'not the archive').hexdigest()}")
    assert only(folder) == ["notes.txt"]


def test_mnist_download_failure_through_torchvision_leaves_nothing(tmp_path, monkeypatch):
    """MNIST downloads with torchvision (a stand-in here: importing torchvision takes seconds), which creates
    <raw>/MNIST/raw/ and may leave a partial file when it fails: both are removed, one message."""
    class MNIST:
        mirrors = ["https://example.invalid/mnist/"]

        def __init__(self, root, train, download):
            folder = Path(root) / "MNIST" / "raw"
            folder.mkdir(parents=True)
            (folder / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example.invalid/mnist/, "
                               "got:\n<urlopen error no route>\n")

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=MNIST)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    raw = tmp_path / "data" / "raw"
    with pytest.raises(DatasetDownloadError) as err:
        prepare_dataset("mnist", {}, tmp_path / "m.npz", raw_dir=raw)
    msg = str(err.value)
    assert msg.startswith("could not download dataset 'mnist': tried https://example.invalid/mnist/train-images-idx3-"
                          "ubyte.gz, ") and "Tried https://example.invalid/mnist/, got: <urlopen error no route>" in msg
    assert not (tmp_path / "data").exists()


def test_urlerror_names_the_cause(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetDownloadError, match=r"tried http://ufldl\.stanford\.edu/housenumbers/train_32x32\.mat "
                                                   r"\(URLError: <urlopen error no route to host>\)"):
        prepare_dataset("svhn", {"extra": True}, tmp_path / "s.npz", raw_dir=tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_the_study_checks_the_image_shape_the_settings_give():
    """config's model/dataset shape check reads dataset_spec(name, settings): SVHN at 28 fits conv28, at 32 not."""
    from conftest import REPO, tiny_params
    from vaebench.config import ConfigError
    from vaebench.validation import validate_study

    params = tiny_params(models={"sigma_vae_conv": {"architecture": {"name": "conv28"}}})
    params["datasets"] = {"svhn": {"image_size": 28}, "celeba": {"image_size": 32}}
    with pytest.raises(ConfigError, match=r"'conv28'\) cannot be used on dataset 'celeba' \(images C x H x W = "
                                          r"3 x 32 x 32\)"):
        validate_study(params, "p.yaml", REPO / "catalogue.yaml")
    del params["datasets"]["celeba"]
    study = validate_study(params, "p.yaml", REPO / "catalogue.yaml")
    assert dataset_spec("svhn", study.config.datasets["svhn"])["image_shape"] == (3, 28, 28)
    params["datasets"]["svhn"] = {}
    with pytest.raises(ConfigError, match=r"dataset 'svhn' \(images C x H x W = 3 x 32 x 32\)"):
        validate_study(params, "p.yaml", REPO / "catalogue.yaml")
