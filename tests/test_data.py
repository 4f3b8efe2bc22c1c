"""Data preparation on the real MNIST files of the offline mirror (skipped when the mirror is absent)."""
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MIRROR
from vaebench import paths
from vaebench.data import SOURCES, DataIntegrityError, parse_idx, prepare_dataset
from vaebench.data.prepared import iterate_minibatches, load_prepared, to_device_uint8

needs_mirror = pytest.mark.mirror("mnist")
FILES = list(SOURCES["mnist"].files.values())
# From the mirror README.
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def only_file(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "mnist.npz"
    summary = prepare_dataset("mnist", {"n_validation": 10000}, out, mirror=str(MIRROR))
    return out, summary, load_prepared(out)


@needs_mirror
def test_full_split(full):
    out, summary, d = full
    assert only_file(out.parent) == ["mnist.npz"]  # no temporary files left behind
    assert summary["counts"] == {"train": 50000, "val": 10000, "test": 10000}
    for split, n in (("train", 50000), ("val", 10000), ("test", 10000)):
        assert d[f"x_{split}"].shape == (n, 1, 28, 28) and d[f"x_{split}"].dtype == np.uint8
        assert d[f"y_{split}"].shape == (n,) and d[f"y_{split}"].dtype == np.int64
    official_train = np.concatenate([d["x_train"], d["x_val"]]).astype(np.float64) / 255
    assert official_train.mean() == pytest.approx(0.1307, abs=5e-5)
    assert official_train.std() == pytest.approx(0.3081, abs=5e-5)
    assert np.bincount(np.concatenate([d["y_train"], d["y_val"]])).tolist() == TRAIN_COUNTS
    assert np.bincount(d["y_test"]).tolist() == TEST_COUNTS
    meta = d["meta"]
    assert meta["dataset"] == "mnist" and meta["image_shape"] == [1, 28, 28]
    assert meta["sha256"] == SOURCES["mnist"].sha256
    assert meta["split"]["val_source_indices"] == [50000, 60000]
    assert Path(meta["source"]) == (MIRROR / "mnist").resolve()


@needs_mirror
def test_truncation_keeps_first_n_of_each_split(full, tmp_path):
    _, _, ref = full
    out = tmp_path / "small.npz"
    summary = prepare_dataset("mnist", {"n_validation": 10000, "max_train": 100, "max_validation": 50,
                                        "max_test": 30}, out, mirror=MIRROR)
    d = load_prepared(out)
    assert summary["counts"] == d["meta"]["counts"] == {"train": 100, "val": 50, "test": 30}
    for split, n in (("train", 100), ("val", 50), ("test", 30)):
        np.testing.assert_array_equal(d[f"x_{split}"], ref[f"x_{split}"][:n])
        np.testing.assert_array_equal(d[f"y_{split}"], ref[f"y_{split}"][:n])


@needs_mirror
def test_validation_is_last_n_of_official_train(full, tmp_path):
    _, _, ref = full
    out = tmp_path / "v.npz"
    prepare_dataset("mnist", {"n_validation": 20000, "max_train": 10, "max_validation": 10, "max_test": 1},
                    out, mirror=MIRROR)
    d = load_prepared(out)
    # official index 40000 is train index 40000 of the 50k/10k split
    np.testing.assert_array_equal(d["x_val"], ref["x_train"][40000:40010])


@needs_mirror
def test_image_size_resizes_each_image_as_torchvision_resize_does(full, tmp_path):
    from PIL import Image
    from torchvision.transforms import Resize

    from vaebench.data.prepare import dataset_spec

    _, _, ref = full
    out = tmp_path / "m64.npz"
    summary = prepare_dataset("mnist", {"image_size": 64, "max_train": 20, "max_validation": 5, "max_test": 5},
                              out, mirror=MIRROR)
    d = load_prepared(out)
    assert summary["image_shape"] == d["meta"]["image_shape"] == [1, 64, 64]
    assert dataset_spec("mnist", {"image_size": 64})["image_shape"] == (1, 64, 64)
    assert dataset_spec("fashion_mnist", {"image_size": 32})["image_shape"] == (1, 32, 32)
    assert "resized to 64x64" in d["meta"]["split"]["description"]
    for split, n in (("train", 20), ("val", 5), ("test", 5)):
        assert d[f"x_{split}"].shape == (n, 1, 64, 64) and d[f"x_{split}"].dtype == np.uint8
        np.testing.assert_array_equal(d[f"y_{split}"], ref[f"y_{split}"][:n])
        for i in (0, n - 1):
            expected = np.asarray(Resize(64)(Image.fromarray(ref[f"x_{split}"][i, 0])))
            np.testing.assert_array_equal(d[f"x_{split}"][i, 0], expected)
    with pytest.raises(Exception, match="image_size"):
        prepare_dataset("mnist", {"image_size": 4}, tmp_path / "bad.npz", mirror=MIRROR)


def test_resize_bilinear_grey_and_rgb_match_torchvision_and_refuse_other_shapes():
    from PIL import Image
    from torchvision.transforms import Resize

    from vaebench.data.common import resize_bilinear

    rng = np.random.default_rng(0)
    grey, rgb = rng.integers(0, 256, (2, 32, 32), np.uint8), rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
    for images in (grey, rgb):
        out = resize_bilinear(images, 28)
        assert out.shape == (2, 28, 28) + images.shape[3:] and out.dtype == np.uint8
        for i in range(2):
            np.testing.assert_array_equal(out[i], np.asarray(Resize((28, 28))(Image.fromarray(images[i]))))
    for bad in (grey.astype(np.float32), rng.integers(0, 256, (2, 32, 32, 4), np.uint8), grey[0]):
        with pytest.raises(ValueError, match=r"resize_bilinear: expected uint8 \(N, H, W\)"):
            resize_bilinear(bad, 28)


def _copy_mirror(tmp_path: Path) -> Path:
    """A private mirror with the three unchanged files symlinked."""
    folder = tmp_path / "mirror" / "mnist"
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / f"{name}.gz").symlink_to(MIRROR / "mnist" / f"{name}.gz")
    return folder


@needs_mirror
@pytest.mark.parametrize("store", ["gzip", "plain"])
def test_corrupted_file_raises_and_writes_nothing(tmp_path, store):
    folder = _copy_mirror(tmp_path)
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((MIRROR / "mnist" / f"{name}.gz").read_bytes()))
    raw[100] ^= 0x01  # one label changes: still valid IDX, wrong content
    (folder / f"{name}.gz").unlink()
    if store == "gzip":
        (folder / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    else:
        (folder / name).write_bytes(bytes(raw))
    out_dir = tmp_path / "out"
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("mnist", {}, out_dir / "mnist.npz", mirror=folder.parent)
    msg = str(err.value)
    assert name in msg and SOURCES["mnist"].sha256[name] in msg
    assert hashlib.sha256(bytes(raw)).hexdigest() in msg
    assert not out_dir.exists() or only_file(out_dir) == []


@needs_mirror
def test_missing_file_is_named(tmp_path):
    folder = _copy_mirror(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        prepare_dataset("mnist", {}, tmp_path / "out" / "m.npz", mirror=folder.parent)
    assert not (tmp_path / "out").exists()


def test_missing_mirror_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere" / "mnist"))):
        prepare_dataset("mnist", {}, tmp_path / "m.npz", mirror=tmp_path / "nowhere")


def test_bad_config_and_name(tmp_path):
    with pytest.raises(ValueError, match="max_trian"):
        prepare_dataset("mnist", {"max_trian": 5}, tmp_path / "m.npz", mirror=tmp_path)
    with pytest.raises(ValueError, match="max_test"):
        prepare_dataset("mnist", {"max_test": -1}, tmp_path / "m.npz", mirror=tmp_path)
    with pytest.raises(KeyError, match="cifar"):
        prepare_dataset("cifar", {}, tmp_path / "m.npz", mirror=tmp_path)


def test_parse_idx_generic_and_errors():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    buf = bytes([0, 0, 0x08, 3]) + np.array(x.shape, ">i4").tobytes() + x.tobytes()
    np.testing.assert_array_equal(parse_idx(buf), x)
    y = np.array([1, -2, 300], dtype=">i4")
    np.testing.assert_array_equal(parse_idx(bytes([0, 0, 0x0C, 1]) + np.array([3], ">i4").tobytes() + y.tobytes()),
                                  [1, -2, 300])
    with pytest.raises(DataIntegrityError, match="f.idx"):
        parse_idx(buf[:-1], "f.idx")
    with pytest.raises(DataIntegrityError, match="magic"):
        parse_idx(b"\x01" + buf[1:])


def test_iterate_minibatches():
    batches = list(iterate_minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = list(iterate_minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert torch.cat(list(iterate_minibatches(5, 2, shuffle=False))).tolist() == [0, 1, 2, 3, 4]
    assert list(iterate_minibatches(0, 3, torch.Generator())) == []


def test_to_device_uint8():
    x = np.zeros((2, 1, 3, 3), np.uint8)
    t = to_device_uint8(x, "cpu")
    assert t.dtype == torch.uint8 and t.shape == (2, 1, 3, 3)
    with pytest.raises(TypeError, match="float32"):
        to_device_uint8(x.astype(np.float32), "cpu")


@needs_mirror
@pytest.mark.pipeline
def test_cli_corrupted_mirror_fails_cleanly(tmp_path):
    """Through the CLI: exit 1, an error naming the file, and no prepared file on disk."""
    import subprocess
    import sys

    import yaml

    from conftest import REPO, tiny_params

    folder = _copy_mirror(tmp_path)
    name = "train-images-idx3-ubyte"
    raw = bytearray(gzip.decompress((MIRROR / "mnist" / f"{name}.gz").read_bytes()))
    raw[5000] ^= 0xFF
    (folder / f"{name}.gz").unlink()
    (folder / f"{name}.gz").write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "catalogue.yaml").write_text((REPO / "catalogue.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "vaebench", "prepare", "--dataset", "mnist", "--mirror", str(folder.parent)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "DataIntegrityError" in proc.stderr and name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / paths.PREPARED.format(study=params["study"], dataset="mnist")).exists()


def test_a_missing_mirror_skips_locally_and_fails_where_it_is_required(monkeypatch):
    from conftest import REQUIRE_MIRROR, check_mirror

    monkeypatch.delenv(REQUIRE_MIRROR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_dataset"):
        check_mirror("mnist", "no_such_dataset")
    monkeypatch.setenv(REQUIRE_MIRROR, "1")
    with pytest.raises(pytest.fail.Exception, match="no_such_dataset.*fails instead of skipping"):
        check_mirror("mnist", "no_such_dataset")
    check_mirror("mnist")           # present: nothing happens
