"""Users' own image folders as a dataset (``kind: image_folder``): folders and tar archives written here with
Pillow (PNG and JPEG, grey and colour, labelled and flat, a tar with one top-level folder), every error case
(the message names the file, nothing is written), the study validation and its JSON schema, the CLI, and the
real JPEG re-encoding of CIFAR-10 in the offline mirror."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import BIN, MIRROR, REPO, env, in_process_study, tiny_params
from vaebench import paths
from vaebench.config import ConfigError, validate_study
from vaebench.data import ImageFolderConfig, ImageFolderError, dataset_spec, prepare_dataset
from vaebench.data.prepared import load_prepared

MODELS = ["vae_bernoulli"]       # an MLP: takes any image size


def _image(seed: int, h: int, w: int, channels: int) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, buf in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(buf)
    return root


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for rel, buf in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(buf)
            tar.addfile(info, io.BytesIO(buf))
    return path


def official(n_train=6, n_test=3, classes=("cat", "dog", "ant"), size=(5, 4), channels=3, encode=_png,
             prefix="") -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """``{train,test}/<class>/<i>.png`` with random pixels: (files, {relative path: pixels})."""
    files, pixels, seed = {}, {}, 0
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                a = _image(seed, *size, channels)
                seed += 1
                rel = f"{prefix}{split}/{c}/{i:03d}.png" if c else f"{prefix}{split}/{i:03d}.png"
                files[rel], pixels[rel] = encode(a), a
    return files, pixels


def settings(path, **kw) -> dict:
    return {"kind": "image_folder", "path": str(path), "image_size": [5, 4], "channels": 3, "n_validation": 4, **kw}


def nchw(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# -----------------------------------------------------------------------------
# Good folders and archives

def test_png_folder_round_trips_pixels_labels_and_split(tmp_path):
    files, pixels = official()
    root = write_folder(tmp_path / "imgs", files)
    # other files (no image extension) are ignored
    (root / "README.txt").write_text("my images")
    (root / "train" / "labels.csv").write_text("x")
    out = tmp_path / "out.npz"
    summary = prepare_dataset("mine", settings(root), out, mirror="/no/such/mirror")
    d = load_prepared(out)
    meta = d["meta"]
    assert meta["classes"] == ["ant", "cat", "dog"] and meta["n_classes"] == 3 and meta["labelled"] is True
    assert meta["counts"] == summary["counts"] == {"train": 14, "val": 4, "test": 9}
    assert meta["image_shape"] == [3, 5, 4] and d["x_train"].shape == (14, 3, 5, 4)
    assert meta["source"] == str(root.resolve()) and list(meta["sha256"]) == ["imgs/"]
    # train/ and val: indices into the sorted train/ paths, disjoint and covering them; test: test/ in order
    train_paths = sorted(p for p in files if p.startswith("train/"))
    test_paths = sorted(p for p in files if p.startswith("test/"))
    tr, va = d["source_index_train"], d["source_index_val"]
    assert not set(tr) & set(va) and sorted([*tr, *va]) == list(range(18))
    assert list(d["source_index_test"]) == list(range(9))
    for split, paths_ in (("train", train_paths), ("val", train_paths), ("test", test_paths)):
        for k, i in enumerate(d[f"source_index_{split}"]):
            rel = paths_[i]
            assert np.array_equal(d[f"x_{split}"][k], nchw(pixels[rel]))          # PNG: exact pixels
            assert d[f"y_{split}"][k] == meta["classes"].index(rel.split("/")[1])
    # deterministic: the same file again; another seed draws another validation set
    out2 = tmp_path / "out2.npz"
    prepare_dataset("mine", settings(root), out2)
    d2 = load_prepared(out2)
    for k in ("x_train", "x_val", "x_test", "y_train", "y_val", "source_index_val"):
        assert np.array_equal(d[k], d2[k])
    assert d2["meta"]["sha256"] == meta["sha256"]
    prepare_dataset("mine", settings(root, split_seed=1), out2)
    assert not np.array_equal(load_prepared(out2)["source_index_val"], va)


def test_grey_flat_random_split_in_a_tar_gz_with_a_top_folder(tmp_path):
    files, pixels = {}, {}
    for i in range(20):
        a = _image(i, 6, 6, 3)
        rel = f"my-faces/img{i:02d}.PNG"            # one top-level folder; the extension in upper case
        files[rel], pixels[rel] = _png(a), a
    tar = write_tar(tmp_path / "faces.tgz", {**files, "my-faces/notes.md": b"ignored"})
    out = tmp_path / "faces.npz"
    cfg = settings(tar, image_size=6, channels=1, split="random", n_validation=3, n_test=5, max_train=10)
    prepare_dataset("faces", cfg, out)
    d = load_prepared(out)
    meta = d["meta"]
    assert meta["labelled"] is False and meta["n_classes"] is None and "classes" not in meta
    assert meta["counts"] == {"train": 10, "val": 3, "test": 5} and d["x_train"].shape == (10, 1, 6, 6)
    assert all((d[f"y_{s}"] == -1).all() for s in ("train", "val", "test"))
    idx = [set(d[f"source_index_{s}"]) for s in ("train", "val", "test")]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    import hashlib
    assert meta["sha256"] == {"faces.tgz": hashlib.sha256(tar.read_bytes()).hexdigest()}
    names = sorted(files)
    for split in ("train", "val", "test"):
        for k, i in enumerate(d[f"source_index_{split}"]):
            grey = np.asarray(Image.fromarray(pixels[names[i]]).convert("L"))     # RGB -> "L", as Pillow does
            assert np.array_equal(d[f"x_{split}"][k, 0], grey)


def test_jpeg_tar_with_class_folders_and_center_crop_resize(tmp_path):
    files, pixels = official(n_train=5, n_test=2, classes=("b", "a"), size=(12, 16), encode=_jpeg,
                             prefix="export/")
    files = {k.replace(".png", ".jpg"): v for k, v in files.items()}
    tar = write_tar(tmp_path / "export.tar", files, mode="w")
    out = tmp_path / "jpeg.npz"
    with pytest.raises(ImageFolderError, match="image is 12x16 .height x width., expected 8x8"):
        prepare_dataset("jpegs", settings(tar, image_size=8, n_validation=2), out)
    assert not out.exists()
    prepare_dataset("jpegs", settings(tar, image_size=8, n_validation=2, resize="center_crop_resize"), out)
    d = load_prepared(out)
    assert d["meta"]["classes"] == ["a", "b"] and d["x_train"].shape == (8, 3, 8, 8)
    assert sorted(d["y_test"]) == [0, 0, 1, 1]
    # the first test image: export/test/a/000.jpg, cropped to 12x12 in the centre and resized to 8x8
    # (Pillow resamples the box (2, 0, 14, 12) of the whole image, so border pixels see their neighbours)
    ref = Image.open(io.BytesIO(files["export/test/a/000.jpg"])).convert("RGB")
    ref = np.asarray(ref.resize((8, 8), Image.Resampling.BICUBIC, box=(2, 0, 14, 12))).transpose(2, 0, 1)
    assert np.array_equal(d["x_test"][0], ref)


def test_unlabelled_official_layout_and_the_study_stage(tmp_path):
    """``train/*.png`` + ``test/*.png`` through the study validation and the prepare stage (the mirror unused)."""
    from vaebench.stages import prepare

    files, _ = official(n_train=8, n_test=4, classes=(None,), size=(6, 6), channels=1)
    root = write_folder(tmp_path / "plain", files)
    params = tiny_params(models=MODELS)
    params["datasets"] = {"plain_grey": settings(root, image_size=6, channels=1, n_validation=2)}
    ws = tmp_path / "ws"
    ws.mkdir()
    with in_process_study(ws, params) as study:
        assert study.dataset_names == ["plain_grey"]
        assert isinstance(study.config.datasets["plain_grey"], ImageFolderConfig)
        assert dataset_spec("plain_grey", study.config.datasets["plain_grey"])["image_shape"] == (1, 6, 6)
        assert study.cell("plain_grey", "vae_bernoulli", 0).record()["data"]["path"] == str(root)
        prepare.run(study, "plain_grey", mirror=str(tmp_path / "no_mirror"))
        d = load_prepared(paths.PREPARED.format(study=study.name, dataset="plain_grey"))
    assert d["meta"]["labelled"] is False and d["meta"]["counts"] == {"train": 6, "val": 2, "test": 4}
    assert d["meta"]["dataset"] == "plain_grey" and d["meta"]["config"]["kind"] == "image_folder"


# -----------------------------------------------------------------------------
# Errors: the message names the file (its path inside the folder or archive), nothing is written

def _not_an_image(files):
    files["train/cat/001.png"] = b"this is text, not a PNG"
    return "train/cat/001.png", "not a readable image (UnidentifiedImageError"


def _truncated_png(files):
    files["test/dog/002.png"] = files["test/dog/002.png"][:60]
    return "test/dog/002.png", "not a readable image"


def _corrupt_jpeg(files):
    a = _image(0, 5, 4, 3)
    files["train/ant/003.jpg"] = _jpeg(a)[:40] + b"\x00" * 50
    return "train/ant/003.jpg", "not a readable image"


def _wrong_size(files):
    files["train/dog/004.png"] = _png(_image(0, 7, 4, 3))
    return "train/dog/004.png", "image is 7x4 (height x width), expected 5x4 (image_size); set resize: center_crop"


def _outside_layout(files):
    files["extra/ant/000.png"] = files["train/ant/000.png"]
    return "extra/ant/000.png", "image outside train/ and test/"


def _flat_folder(files):
    flat = {f"{i:03d}.png": v for i, v in enumerate(files.values())}
    files.clear()
    files.update(flat)
    return "000.png", "image outside train/ and test/ (split: folders expects train/[<class>/]*.{png,jpg,jpeg} " \
                      "and test/[<class>/]*.{png,jpg,jpeg}); for a folder without train/ and test/, set the " \
                      "dataset's split: random"


def _no_test_split(files):
    for k in [k for k in files if k.startswith("test/")]:
        del files[k]
    return "", "no images in test/"


def _empty(files):
    files.clear()
    return "", "no image files (.png, .jpg, .jpeg) found"


def _mixed(files):
    files["train/loose.png"] = files["train/ant/000.png"]
    return "train/loose.png", "mixed layout"


def _unknown_test_class(files):
    files["test/zebra/000.png"] = files["train/ant/000.png"]
    return "test/zebra/000.png", "class 'zebra' has no training images"


ERRORS = {f.__name__.lstrip("_"): f for f in (_not_an_image, _truncated_png, _corrupt_jpeg, _wrong_size,
                                              _outside_layout, _flat_folder, _no_test_split, _empty, _mixed, _unknown_test_class)}


@pytest.mark.parametrize("container", ["folder", "tar.gz"])
@pytest.mark.parametrize("case", ERRORS)
def test_bad_image_folder_is_named_and_nothing_written(tmp_path, case, container):
    files, _ = official()
    rel, wording = ERRORS[case](files)
    if container == "folder":
        root = write_folder(tmp_path / "imgs", files)
        root.mkdir(exist_ok=True)
        named = str(root / rel) if rel else str(root)
    else:
        root = write_tar(tmp_path / "imgs.tar.gz", files)
        named = f"{rel} (in {root})" if rel else str(root)
    out = tmp_path / "out" / "mine.npz"
    with pytest.raises(ImageFolderError) as err:
        prepare_dataset("mine", settings(root), out)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(named) and wording in msg, msg
    assert not out.exists() and not (out.parent.exists() and os.listdir(out.parent))


def test_archive_and_path_errors(tmp_path):
    files, _ = official()
    good = write_tar(tmp_path / "good.tar.gz", files).read_bytes()
    out = tmp_path / "out.npz"
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageFolderError, match=f"^{truncated}: not a readable tar archive .* truncated or corrupted"):
        prepare_dataset("mine", settings(truncated), out)
    # a path gone after the study was validated: the stage names it
    root = write_folder(tmp_path / "imgs", files)
    cfg = ImageFolderConfig.model_validate(settings(root))
    (tmp_path / "imgs").rename(tmp_path / "moved")
    with pytest.raises(ImageFolderError, match=f"^image folder {root} does not exist"):
        prepare_dataset("mine", cfg, out)
    assert not out.exists()
    # too few training images for n_validation
    write_folder(root, files)
    with pytest.raises(ImageFolderError, match=f"^{root}: n_validation = 18 leaves no training image: train/ "
                                               "holds 18 images"):
        prepare_dataset("mine", settings(root, n_validation=18), out)
    assert not out.exists()


def test_study_validation(tmp_path):
    files, _ = official()
    root = write_folder(tmp_path / "imgs", files)
    base = tiny_params(models=MODELS)

    def check(datasets, expected):
        with pytest.raises(ConfigError) as err:
            validate_study({**base, "datasets": datasets}, "s.yaml", REPO / "catalogue.yaml")
        assert expected in str(err.value), str(err.value)

    # an unknown name without kind: image_folder keeps the error listing the known names
    check({"imagenet": {}}, "s.yaml: invalid key 'imagenet' at 'datasets': Input should be 'mnist', "
                                "'fashion_mnist', 'frey_face', 'cifar10', 'svhn', 'celeba', 'moving_mnist' or 'bair'")
    check({"imagenet": {"kind": "folder", "path": str(root)}}, "invalid key 'imagenet' at 'datasets'")
    check({"my-set": settings(root)}, "invalid key 'my-set' at 'datasets': String should match pattern")
    from vaebench.validation import validate_study as validate_all

    # the path is checked before any job, not when the settings are parsed (reading a study file needs no data)
    missing = tmp_path / "nowhere"
    assert validate_study({**base, "datasets": {"mine": settings(missing)}}, "s.yaml", REPO / "catalogue.yaml")
    for path, expected in ((missing, f"s.yaml: invalid value at 'datasets.mine.path': '{missing}': "
                                     f"no such folder or archive: {missing}"),
                           (tmp_path / "file.zip", "is neither a folder nor a .tar / .tar.gz / .tgz archive")):
        (tmp_path / "file.zip").write_bytes(b"PK")
        with pytest.raises(ConfigError) as err:
            validate_all({**base, "datasets": {"mine": settings(path)}}, "s.yaml", REPO / "catalogue.yaml")
        assert expected in str(err.value), str(err.value)
    check({"mine": settings(root, channels=4)}, "invalid value at 'datasets.mine.channels': 4: Input should be 1 or 3")
    check({"mine": settings(root, resize="stretch")}, "invalid value at 'datasets.mine.resize'")
    check({"mine": settings(root, colour=True)}, "unknown key 'datasets.mine.colour' (allowed: kind, path, ")
    check({"mine": settings(root, n_test=5)}, "n_test is only for split: random")
    check({"mine": settings(root, image_size=[5])}, "datasets.mine.image_size")
    bad_model = {**base, "models": {"vae_bernoulli": {"architecture": {"name": "conv28"}}}}

    with pytest.raises(ConfigError, match="cannot be used on dataset 'mine' .images C x H x W = 3 x 5 x 4."):
        validate_all({**bad_model, "datasets": {"mine": settings(root)}}, "s.yaml", REPO / "catalogue.yaml")
    # relative paths are relative to the repository root (the working directory)
    rel = os.path.relpath(root, REPO)
    study = validate_study({**base, "datasets": {"mine": settings(rel), "mnist": None}}, "s.yaml",
                           REPO / "catalogue.yaml")
    assert study.dataset_names == ["mine", "mnist"] and study.config.datasets["mine"].path == rel
    # the committed JSON schema accepts it and rejects what the validation rejects
    schema = yaml.safe_load((REPO / paths.STUDY_SCHEMA).read_text())
    v = jsonschema.Draft202012Validator(schema)
    good = {**base, "datasets": {"mine": settings(root), "mnist": {}}}
    assert not list(v.iter_errors(good))
    for bad in ({"mine": settings(root, channels=2)}, {"my-set": settings(root)}, {"mine": {"path": str(root)}}):
        assert list(v.iter_errors({**base, "datasets": bad})), bad


@pytest.mark.pipeline
def test_cli_prepare_names_the_bad_file(tmp_path):
    """``python -m vaebench prepare`` on a folder with a corrupt image: exit code 1, one line naming it."""
    import shutil

    ws = tmp_path / "ws"
    files, _ = official()
    files["train/dog/002.png"] = files["train/dog/002.png"][:50]
    write_folder(ws / "my_images", files)
    params = tiny_params(models=MODELS)
    params["datasets"] = {"mine": settings("my_images")}          # relative to the workspace root
    (ws / "study.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("catalogue.yaml", "claims.yaml"):
        shutil.copy2(REPO / name, ws / name)
    before = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*"))
    proc = subprocess.run([str(BIN / "python"), "-m", "vaebench", "prepare", "--dataset", "mine", "--params",
                           "study.yaml"], cwd=ws, capture_output=True, text=True, timeout=300,
                          env=env(tmp_path, VAEBENCH_MLFLOW="0", PYTHONPATH=str(REPO / "src")))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vaebench:")]
    assert lines == [proc.stderr.strip().splitlines()[-1]], proc.stderr
    assert lines[0].startswith("vaebench: ImageFolderError: my_images/train/dog/002.png: not a readable image"), lines
    assert sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*")) == before      # nothing written


# -----------------------------------------------------------------------------
# The real data: the JPEG re-encoding of CIFAR-10 in the offline mirror

EXAMPLE = REPO / "studies" / "example_image_folder.yaml"


@pytest.mark.mirror("cifar10-jpeg")
@pytest.mark.pipeline
def test_the_example_image_folder_study_runs_as_committed_and_changes_no_tracked_file(tmp_path):
    """The README's "your own images" example, studies/example_image_folder.yaml, run as committed through real
    Snakemake on the mirror's JPEG re-encoding of CIFAR-10 (quality about 75; NOT the original CIFAR-10 pixels):
    prepare reads the whole 60,000-member ``cifar10-jpeg.tar.gz`` (``train/<class>/NNNN.jpg``,
    ``test/<class>/NNNN.jpg``; every image decoded and checked) and keeps seeded subsets, the FID classifier
    trains on its 10 class folders, both models train and are evaluated, and the report fits a study of the
    user's own (no verdict table). The project's tracked files (committed reports, README, dvc.lock) are
    untouched. Then a study whose folder holds a broken image fails in prepare and leaves no MLflow experiment."""
    from mlflow.tracking import MlflowClient

    from conftest import make_workspace, run

    ws = make_workspace(tmp_path / "ws", yaml.safe_load((REPO / paths.DEFAULT_STUDY).read_text()), git=False)
    tracked = run(["git", "ls-files", "reports", "README.md", "dvc.lock", ".gitignore"], REPO).stdout.split()
    for name in tracked:                                         # the project's committed files, as in a clone
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, ws / name)
    run(["git", "init", "-q"], ws)
    run(["git", "add", "-A"], ws)
    run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-q", "-m", "clone"], ws)
    study = yaml.safe_load(EXAMPLE.read_text())
    name, (dataset, folder) = study["study"], next(iter(study["datasets"].items()))
    assert Path(folder["path"]).parts[:2] == ("..", "shared")  # the mirror, relative to the repository root

    t0 = time.perf_counter()
    out = run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "studies/example_image_folder.yaml"], ws,
              env=env(tmp_path, ws), timeout=900)
    print(f"example image-folder study end to end in {time.perf_counter() - t0:.1f} s")
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], ws).stdout == ""
    assert f"snakemake --report reports/{name}/snakemake.html --configfile studies/example_image_folder.yaml" \
        in out.stdout + out.stderr                                # the views of this study, printed at the end

    d = load_prepared(ws / paths.PREPARED.format(study=name, dataset=dataset))
    meta = d["meta"]
    assert d["x_train"].shape == (folder["max_train"], 3, 32, 32)
    assert d["x_val"].shape == (folder["max_validation"], 3, 32, 32)
    assert d["x_test"].shape == (folder["max_test"], 3, 32, 32)
    assert meta["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                               "truck"]
    assert meta["n_classes"] == 10 and meta["labelled"] is True
    assert meta["split"]["n_source_images"] == {"train": 50000, "test": 10000}
    # max_* keeps a seeded subset, not the first N sorted paths (which would be all airplanes): every class stays
    assert set(d["y_test"]) == set(range(10)) and set(d["y_train"]) == set(range(10))
    assert not set(d["source_index_val"]) & set(d["source_index_train"])
    for split in ("train", "val", "test"):
        assert 0.3 < d[f"x_{split}"].mean() / 255 < 0.7, split
        assert d[f"x_{split}"].std() / 255 > 0.1         # real images, not a constant

    dim = 3 * 32 * 32                                    # bits/dim: D = C*H*W
    for model in study["models"]:
        for seed in study["seeds"]:
            m = json.loads((ws / paths.METRICS.format(study=name, dataset=dataset, model=model, seed=seed)).read_text())
            assert all(np.isfinite(m[k]) for k in ("test_elbo_nats", "test_nll_iwae_nats", "fid_classifier"))
            assert m["bits_per_dim"] == pytest.approx((m["test_nll_iwae_nats"] + dim * np.log(256)) / (dim * np.log(2)),
                                                      rel=1e-9)
    html = (ws / paths.REPORT_HTML.format(study=name)).read_text()
    assert "applies to this study" in html and "Verdicts:" not in html     # one line, no table of n/a rows
    assert all(m in html for m in study["models"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"{dataset}/{m}/seed{s}" for m in study["models"]
                                                           for s in study["seeds"])

    # a folder with a broken image: prepare fails with one line naming the file, and no empty experiment remains
    files, _ = official()
    files["train/dog/002.png"] = files["train/dog/002.png"][:50]
    write_folder(ws / "broken_images", files)
    broken = {**study, "study": "broken_example", "datasets": {"mine": settings(ws / "broken_images")}}
    (ws / "studies" / "broken_example.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    proc = run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "studies/broken_example.yaml"], ws,
               check=False, env=env(tmp_path, ws), timeout=600)
    assert proc.returncode != 0
    assert "broken_images/train/dog/002.png: not a readable image" in (ws / "logs" / "broken_example" / "prepare" /
                                                                        "mine.log").read_text()
    exp = client.get_experiment_by_name("broken_example")
    assert exp is None or exp.lifecycle_stage == "deleted"
