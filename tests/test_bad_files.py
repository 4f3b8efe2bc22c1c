"""A damaged or wrong input file stops its stage with one clear error naming the file, and nothing is written.

Every case writes the bad file into a fresh workspace holding real outputs of earlier stages (MNIST prepared by
the real prepare stage from the offline mirror with a tiny study, one real checkpoint trained for one epoch by
the real train stage), runs the real stage function in-process (and, for the prepared npz and the checkpoint,
the real CLI in a subprocess) and checks

1. the specific error class and wording, the file's name and the job to rerun in the message,
2. that the workspace's files are byte-for-byte those before the run: no output, no partial or temporary file,
   and the earlier outputs of the stage (a checkpoint, a metrics file, a prepared file) unchanged,
3. for the CLI: exit code 1, one ``vaebench: <Error>: ...`` line naming the file, no traceback.

Cases: the prepared ``.npz`` (truncated, random bytes, empty, a member failing its CRC, an array missing, of
another dtype or shape, meta not JSON); the checkpoint (truncated, random bytes, a flipped byte, not a train
checkpoint); a checkpoint of another model, seed or dataset, a stale one (model_config changed in the study),
weights that do not fit; a missing mirror root, dataset folder or file; truncated or corrupted raw MNIST IDX
files (gzipped and plain) and a truncated Frey Face ``.mat``.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN, MIRROR, REPO, env, in_process_study, tiny_params
from vaebench import paths
from vaebench.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint
from vaebench.data import SOURCES, DataIntegrityError, MirrorError
from vaebench.data.prepared import PreparedDataError, load_prepared

pytestmark = pytest.mark.mirror("mnist")

MODELS = ["vae_bernoulli", "sigma_vae_optimal"]
PARAMS = tiny_params(models=MODELS, seeds=(0, 1))
STUDY = PARAMS["study"]
PREPARED = Path(paths.PREPARED.format(study=STUDY, dataset="mnist"))
CELL = paths.cell_paths(STUDY, "mnist", "vae_bernoulli", 0)
CKPT = CELL["checkpoint"]
def rerun_hint(stage: str, target: str, dvc_stage: str) -> str:
    """The advice that ends each message: the job that rewrites ``target``, with either engine."""
    return (f"delete it and rerun its {stage} job: `snakemake --force {target}` (Snakemake; with --configfile <its "
            f"study file>) or `dvc repro -f -s {dvc_stage}` (DVC; for a study under studies/, `dvc repro -f -s "
            f"pipelines/<study>/dvc.yaml:{dvc_stage}`)")


PREPARE_HINT = rerun_hint("prepare", PREPARED.as_posix(), "prepare@mnist")


def train_hint(model: str = "vae_bernoulli", seed: int = 0) -> str:
    target = paths.CHECKPOINT.format(study=STUDY, dataset="mnist", model=model, seed=seed)
    return rerun_hint("train", target, f"train@mnist-{model}-{seed}")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace with the real prepared MNIST subset and the real checkpoint (and log) of vae_bernoulli seed 0."""
    from vaebench.stages import prepare, train

    tmp = tmp_path_factory.mktemp("base")
    with in_process_study(tmp, PARAMS) as study:
        prepare.run(study, "mnist", mirror=str(MIRROR))
        train.run(study, "mnist", "vae_bernoulli", 0)
    return tmp


def workspace(tmp: Path, base: Path, params: dict = PARAMS) -> Path:
    """A copy of ``base``'s study data (prepared file, checkpoint, log) with the files the CLI reads, plus an
    earlier metrics file of the cell (the evaluate stage must leave it alone when it fails). The shared store
    (data/shared) is left out: with it the prepare stage would copy the stored file instead of reading the mirror
    these tests damage."""
    import yaml

    ws = tmp / "ws"
    store = Path(paths.SHARED).parts[1]
    shutil.copytree(base / "data", ws / "data",
                    ignore=lambda d, names: [store] if Path(d) == base / "data" else [])
    for name in ("catalogue.yaml", "claims.yaml"):
        shutil.copy2(REPO / name, ws / name)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    metrics = ws / CELL["metrics"]
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"earlier": "run"}\n')
    return ws


def snapshot(ws: Path) -> dict[str, bytes]:
    """Every file under ``ws`` (relative path -> content)."""
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


def assert_unchanged(ws: Path, before: dict[str, bytes]) -> None:
    after = snapshot(ws)
    assert sorted(after) == sorted(before), f"files added/removed: {set(after) ^ set(before)}"
    changed = [k for k in before if after[k] != before[k]]
    assert not changed, f"files changed: {changed}"


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m vaebench <args>`` in ``ws`` with the package of this repository, MLflow off."""
    e = env(ws, VAEBENCH_MLFLOW="0", PYTHONPATH=str(REPO / "src"))
    return subprocess.run([str(BIN / "python"), "-m", "vaebench", *args], cwd=ws, env=e, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_failure(proc: subprocess.CompletedProcess, error: str, *parts: str) -> str:
    """Exit code 1, no traceback, and the error as the last and only ``vaebench:`` line, holding ``parts``."""
    err = proc.stderr
    assert proc.returncode == 1, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vaebench:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err[-3000:]
    assert lines[0].startswith(f"vaebench: {error}: "), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# -----------------------------------------------------------------------------
# 1. The prepared npz

def _arrays(base: Path) -> dict[str, np.ndarray]:
    with np.load(base / PREPARED) as z:
        return {k: z[k] for k in z.files}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _flip_in_member(data: bytes, member: str | None = None) -> bytes:
    """``data`` (a zip archive) with one byte flipped in the middle of ``member``'s stored bytes (default: the
    largest member): the archive stays well formed, the member no longer matches its CRC-32."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member) if member else max(z.infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    at = info.header_offset
    name_len, extra_len = (int.from_bytes(data[at + k: at + k + 2], "little") for k in (26, 28))  # local header
    out = bytearray(data)
    out[at + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
    return bytes(out)


def _without(arrays: dict, key: str) -> dict:
    return {k: v for k, v in arrays.items() if k != key}


# name -> (bad file from the good file's bytes and arrays, wording of the error)
NPZ_CASES = {
    "truncated": (lambda b, a: b[: len(b) // 2], "not an .npz archive"),
    "random_bytes": (lambda b, a: np.random.default_rng(0).bytes(4096), "not an .npz archive"),
    "empty": (lambda b, a: b"", "not an .npz archive (0 bytes"),
    "crc_error": (lambda b, a: _flip_in_member(b, "x_train.npy"),
                  "array 'x_train' is damaged (BadZipFile: Bad CRC-32 for file 'x_train.npy')"),
    "missing_array": (lambda b, a: _npz(**_without(a, "y_test")), "missing array(s) y_test"),
    "float_images": (lambda b, a: _npz(**{**a, "x_train": a["x_train"].astype(np.float32)}),
                     "array 'x_train' is float32 of shape (2000, 1, 28, 28), expected uint8 of shape (N, C, H, W)"),
    "no_channel_axis": (lambda b, a: _npz(**{**a, "x_test": a["x_test"][:, 0]}),
                        "array 'x_test' is uint8 of shape (500, 28, 28), expected uint8 of shape (N, C, H, W)"),
    "other_image_size": (lambda b, a: _npz(**{**a, "x_val": a["x_val"][:, :, :20]}),
                         "array 'x_val' has images of shape (1, 20, 28), but 'x_train' has (1, 28, 28)"),
    "int32_labels": (lambda b, a: _npz(**{**a, "y_val": a["y_val"].astype(np.int32)}),
                     "array 'y_val' is int32 of shape (500,), expected int64 of shape (500,)"),
    "short_labels": (lambda b, a: _npz(**{**a, "y_train": a["y_train"][:10]}),
                     "array 'y_train' is int64 of shape (10,), expected int64 of shape (2000,)"),
    "meta_not_json": (lambda b, a: _npz(**{**a, "meta": np.array("{not json")}), "'meta' is not valid JSON"),
    "meta_disagrees": (lambda b, a: _npz(**{**a, "x_test": a["x_test"][:100], "y_test": a["y_test"][:100]}),
                       "'meta' records counts"),
}


def _write_bad_npz(ws: Path, base: Path, case: str) -> str:
    make, wording = NPZ_CASES[case]
    (ws / PREPARED).write_bytes(make((base / PREPARED).read_bytes(), _arrays(base)))
    return wording


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_prepared_file_stops_train_and_writes_nothing(base, tmp_path, case):
    from vaebench.stages import train

    ws = workspace(tmp_path, base)
    wording = _write_bad_npz(ws, base, case)
    before = snapshot(ws)
    with in_process_study(ws, PARAMS) as study:
        with pytest.raises(PreparedDataError) as err:
            train.run(study, "mnist", "vae_bernoulli", 0)
    msg = str(err.value)
    assert msg.startswith(f"{PREPARED}: ") and wording in msg and msg.endswith(PREPARE_HINT), msg
    assert "\n" not in msg
    assert_unchanged(ws, before)          # the earlier checkpoint and log are untouched, nothing new


def test_load_prepared_reads_a_good_file_and_misses_are_file_not_found(base, tmp_path):
    d = load_prepared(base / PREPARED)
    assert d["x_train"].shape == (2000, 1, 28, 28) and d["meta"]["dataset"] == "mnist"
    with pytest.raises(FileNotFoundError, match="prepared dataset not found"):
        load_prepared(tmp_path / "none.npz")
    # outside the pipeline's layout the message still names the file and what to do
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(PreparedDataError, match=r"x\.npz: not an \.npz archive.*rerun the prepare stage"):
        load_prepared(tmp_path / "x.npz")


def test_cli_train_on_truncated_prepared_file(base, tmp_path):
    ws = workspace(tmp_path, base)
    _write_bad_npz(ws, base, "truncated")
    before = snapshot(ws)
    proc = cli(ws, "train", "--dataset", "mnist", "--model", "vae_bernoulli", "--seed", "0")
    assert_one_line_failure(proc, "PreparedDataError", f"{PREPARED}: not an .npz archive", PREPARE_HINT)
    assert_unchanged(ws, before)


def test_cli_evaluate_on_prepared_file_of_wrong_dtype(base, tmp_path):
    ws = workspace(tmp_path, base)
    _write_bad_npz(ws, base, "int32_labels")
    before = snapshot(ws)
    proc = cli(ws, "evaluate", "--dataset", "mnist", "--model", "vae_bernoulli", "--seed", "0")
    assert_one_line_failure(proc, "PreparedDataError", f"{PREPARED}: array 'y_val' is int32", PREPARE_HINT)
    assert_unchanged(ws, before)          # the earlier metrics.json is kept, no grid or per_image file


# -----------------------------------------------------------------------------
# 2. A damaged checkpoint

def _ckpt(base: Path) -> dict:
    return torch.load(base / CKPT, map_location="cpu", weights_only=True)


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


CKPT_CASES = {
    "truncated": (lambda b, c: b[: len(b) // 2], "not a checkpoint archive"),
    "random_bytes": (lambda b, c: np.random.default_rng(0).bytes(4096), "not a checkpoint archive"),
    "flipped_byte": (lambda b, c: _flip_in_member(b), "fails its CRC-32 check: the file is corrupted"),
    "not_a_train_checkpoint": (lambda b, c: _save({"state_dict": c["state_dict"]}),
                               "not a checkpoint of the train stage (a dict without cell, image_shape"),
}


@pytest.mark.parametrize("case", CKPT_CASES)
def test_damaged_checkpoint_stops_evaluate_and_writes_nothing(base, tmp_path, case):
    from vaebench.stages import evaluate

    ws = workspace(tmp_path, base)
    make, wording = CKPT_CASES[case]
    (ws / CKPT).write_bytes(make((base / CKPT).read_bytes(), _ckpt(base)))
    before = snapshot(ws)
    with in_process_study(ws, PARAMS) as study:
        with pytest.raises(CheckpointError) as err:
            evaluate.run(study, "mnist", "vae_bernoulli", 0)
    msg = str(err.value)
    assert msg.startswith(f"{CKPT}: ") and wording in msg and msg.endswith(train_hint()), msg
    assert "\n" not in msg
    assert_unchanged(ws, before)


def test_flipped_byte_goes_unnoticed_by_torch_alone(base):
    """Why the CRC check is needed: torch.load reads the damaged record and returns different weights."""
    data = _flip_in_member((base / CKPT).read_bytes())
    damaged = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["state_dict"]
    good = _ckpt(base)["state_dict"]
    assert any(not torch.equal(damaged[k], good[k]) for k in good)


def test_cli_evaluate_on_truncated_checkpoint(base, tmp_path):
    ws = workspace(tmp_path, base)
    (ws / CKPT).write_bytes((base / CKPT).read_bytes()[:1000])
    before = snapshot(ws)
    proc = cli(ws, "evaluate", "--dataset", "mnist", "--model", "vae_bernoulli", "--seed", "0")
    assert_one_line_failure(proc, "CheckpointError", f"{CKPT}: not a checkpoint archive (1000 bytes",
                            train_hint())
    assert_unchanged(ws, before)


# -----------------------------------------------------------------------------
# 3. A checkpoint of another model, a stale one, weights that do not fit

@pytest.mark.parametrize("model,seed", [("sigma_vae_optimal", 0), ("vae_bernoulli", 1)])
def test_checkpoint_of_another_cell_is_refused(base, tmp_path, model, seed):
    """vae_bernoulli seed 0's checkpoint copied to another cell's place (another model; another seed)."""
    from vaebench.stages import evaluate

    ws = workspace(tmp_path, base)
    target = paths.cell_paths(STUDY, "mnist", model, seed)["checkpoint"]
    (ws / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ws / CKPT, ws / target)
    before = snapshot(ws)
    with in_process_study(ws, PARAMS) as study:
        with pytest.raises(CheckpointMismatchError) as err:
            evaluate.run(study, "mnist", model, seed)
    assert str(err.value) == (f"{target}: checkpoint of another model: expected mnist/{model}/seed{seed}, found "
                              f"mnist/vae_bernoulli/seed0; {train_hint(model, seed)}")
    assert_unchanged(ws, before)


def test_cli_evaluate_on_checkpoint_of_another_model(base, tmp_path):
    ws = workspace(tmp_path, base)
    target = paths.cell_paths(STUDY, "mnist", "sigma_vae_optimal", 0)["checkpoint"]
    target_ws = ws / target
    target_ws.parent.mkdir(parents=True)
    shutil.copy2(ws / CKPT, target_ws)
    before = snapshot(ws)
    proc = cli(ws, "evaluate", "--dataset", "mnist", "--model", "sigma_vae_optimal", "--seed", "0")
    assert_one_line_failure(proc, "CheckpointMismatchError", f"{target}: checkpoint of another model: expected "
                            "mnist/sigma_vae_optimal/seed0, found mnist/vae_bernoulli/seed0",
                            train_hint("sigma_vae_optimal"))
    assert_unchanged(ws, before)


def test_stale_checkpoint_after_a_model_edit_is_refused(base, tmp_path):
    """The study now gives vae_bernoulli latent_dim 8; its checkpoint was trained with the catalogue's 20."""
    from vaebench.stages import evaluate

    params = tiny_params(models={"vae_bernoulli": {"latent_dim": 8}, "sigma_vae_optimal": {}}, seeds=(0, 1))
    ws = workspace(tmp_path, base, params)
    before = snapshot(ws)
    with in_process_study(ws, params) as study:
        with pytest.raises(CheckpointMismatchError) as err:
            evaluate.run(study, "mnist", "vae_bernoulli", 0)
    assert str(err.value) == (f"{CKPT}: stale checkpoint of mnist/vae_bernoulli/seed0: its model_config differs "
                              "from the study's current one for mnist/vae_bernoulli/seed0 (model_config.latent_dim: "
                              f"expected 8, found 20); {train_hint()}")
    assert_unchanged(ws, before)


def _state_edit(state: dict, how: str) -> dict:
    state = dict(state)
    first, second = list(state)[:2]
    if how == "missing":
        del state[first]
    elif how == "unexpected":
        state["extra.weight"] = torch.zeros(3)
    else:
        state[second] = torch.zeros(7, 7)
    return state


@pytest.mark.parametrize("how,wording", [
    ("missing", "(missing keys encoder.net.1.weight)"),
    ("unexpected", "(unexpected keys extra.weight)"),
    ("shape", "(shape mismatch (checkpoint vs model) encoder.net.1.bias (7, 7) vs (384,))"),
])
def test_weights_that_do_not_fit_are_refused(base, tmp_path, how, wording):
    from vaebench.stages import evaluate

    ws = workspace(tmp_path, base)
    c = _ckpt(base)
    (ws / CKPT).write_bytes(_save({**c, "state_dict": _state_edit(c["state_dict"], how)}))
    before = snapshot(ws)
    with in_process_study(ws, PARAMS) as study:
        with pytest.raises(CheckpointMismatchError) as err:
            evaluate.run(study, "mnist", "vae_bernoulli", 0)
    assert str(err.value) == (f"{CKPT}: its weights do not fit the model mnist/vae_bernoulli/seed0 it records "
                              f"{wording}; {train_hint()}")
    assert_unchanged(ws, before)


def test_load_checkpoint_expect(base, tmp_path):
    """``expect`` compares the given keys only; the model_config as the code reads it (description ignored);
    without ``expect`` the existing callers' behaviour is unchanged."""
    path = base / CKPT
    record = _ckpt(base)["cell"]
    model, meta = load_checkpoint(path)
    assert not model.training and meta["cell"] == record and "state_dict" not in meta
    load_checkpoint(path, expect={k: record[k] for k in ("dataset", "model", "seed", "model_config")})
    load_checkpoint(path, expect={"model_config": {**record["model_config"], "description": "reworded"}})
    with pytest.raises(CheckpointMismatchError, match="expected frey_face/vae_bernoulli/seed0, found "
                                                      "mnist/vae_bernoulli/seed0"):
        load_checkpoint(path, expect={"dataset": "frey_face", "model": "vae_bernoulli", "seed": 0})
    other = {**record["model_config"], "objective": {"name": "elbo", "beta": 2.0}}
    with pytest.raises(CheckpointMismatchError, match=r"model_config\.objective\.beta: expected 2\.0, found 1\.0"):
        load_checkpoint(path, expect={"model_config": other})


# -----------------------------------------------------------------------------
# 4. A missing mirror root, dataset folder or file

def _partial_mirror(root: Path, drop: str | None) -> Path:
    """``root/mnist/`` with the mirror's files symlinked, except ``drop``."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in SOURCES["mnist"].files.values():
        if name != drop:
            (folder / f"{name}.gz").symlink_to(MIRROR / "mnist" / f"{name}.gz")
    return root


LAYOUT = "\n".join(f"  <mirror>/mnist/{f}[.gz]" for f in SOURCES["mnist"].files.values())


@pytest.mark.parametrize("case", ["no_root", "root_is_a_file", "no_dataset_folder", "missing_file"])
def test_missing_mirror_parts_are_named_with_the_layout(tmp_path, case):
    from vaebench.stages import prepare

    ws = tmp_path / "ws"
    ws.mkdir()
    root = tmp_path / "mirror"
    if case == "root_is_a_file":
        root.write_text("not a folder")
    elif case == "no_dataset_folder":
        (root / "frey_face").mkdir(parents=True)
    elif case == "missing_file":
        _partial_mirror(root, drop="t10k-images-idx3-ubyte")
    with in_process_study(ws, PARAMS) as study:
        before = snapshot(ws)
        with pytest.raises(MirrorError) as err:
            prepare.run(study, "mnist", mirror=str(root))
        assert_unchanged(ws, before)
    assert isinstance(err.value, FileNotFoundError)     # the CLI's "missing file" (exit code 2), as before
    msg = str(err.value)
    assert msg.endswith(f"the mirror of 'mnist' is laid out as\n{LAYOUT}"), msg
    expected = {
        "no_root": f"dataset mirror root '{root}' (from --mirror or $VAEBENCH_DATA_MIRROR) does not exist: "
                   f"expected the mirror folder of 'mnist' at {root / 'mnist'};",
        "root_is_a_file": f"dataset mirror root '{root}' (from --mirror or $VAEBENCH_DATA_MIRROR) is not a folder",
        "no_dataset_folder": f"dataset mirror folder missing for 'mnist': expected {root / 'mnist'} (the mirror "
                             f"root '{root}', from --mirror or $VAEBENCH_DATA_MIRROR, has no mnist/ folder);",
        "missing_file": f"dataset file missing from the mirror of 'mnist': expected "
                        f"{root / 'mnist' / 't10k-images-idx3-ubyte'}[.gz] (the folder holds t10k-labels-idx1-ubyte.gz, "
                        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz);",
    }[case]
    assert msg.startswith(expected), msg
    assert not (ws / "data").exists()                    # no data/raw, no data/prepared


# -----------------------------------------------------------------------------
# 5. Damaged raw files: MNIST IDX (gzipped or plain) and the Frey Face .mat

def _gz_random(raw: bytes) -> bytes:
    return b"\x1f\x8b" + np.random.default_rng(1).bytes(2000)     # gzip magic, then garbage


RAW_CASES = {
    "gz_truncated": ("t10k-labels-idx1-ubyte.gz", lambda raw: gzip.compress(raw)[:2000],
                     "not valid gzip data (EOFError: Compressed file ended before the end-of-stream marker"),
    "gz_random_bytes": ("t10k-labels-idx1-ubyte.gz", _gz_random, "not valid gzip data (BadGzipFile"),
    "plain_truncated": ("t10k-labels-idx1-ubyte", lambda raw: raw[: len(raw) // 2],
                        "SHA-256 mismatch for {path} (decompressed t10k-labels-idx1-ubyte): expected "
                        + SOURCES["mnist"].sha256["t10k-labels-idx1-ubyte"]),
}


@pytest.mark.parametrize("case", RAW_CASES)
def test_damaged_idx_file_is_named_and_prepared_file_kept(base, tmp_path, case):
    """A damaged raw file of the mirror: DataIntegrityError naming it; the earlier prepared file is unchanged."""
    from vaebench.stages import prepare

    name, make, wording = RAW_CASES[case]
    root = _partial_mirror(tmp_path / "mirror", drop="t10k-labels-idx1-ubyte")
    raw = gzip.decompress((MIRROR / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = root / "mnist" / name
    path.write_bytes(make(raw))
    ws = workspace(tmp_path, base)
    before = snapshot(ws)
    with in_process_study(ws, PARAMS) as study:
        with pytest.raises(DataIntegrityError) as err:
            prepare.run(study, "mnist", mirror=str(root))
    msg = str(err.value)
    assert str(path) in msg and wording.format(path=path) in msg, msg
    assert_unchanged(ws, before)
    assert not (ws / "data" / "raw").exists()


@pytest.mark.mirror("frey_face")
def test_truncated_frey_face_file_is_named_and_nothing_written(tmp_path):
    from vaebench.stages import prepare

    folder = tmp_path / "mirror" / "frey_face"
    folder.mkdir(parents=True)
    raw = (MIRROR / "frey_face" / "frey_rawface.mat").read_bytes()
    path = folder / "frey_rawface.mat"
    path.write_bytes(raw[: len(raw) // 3])
    ws = tmp_path / "ws"
    ws.mkdir()
    params = tiny_params(models=MODELS, datasets=("frey_face",))
    with in_process_study(ws, params) as study:
        with pytest.raises(DataIntegrityError) as err:
            prepare.run(study, "frey_face", mirror=str(folder.parent))
    msg = str(err.value)
    assert msg.startswith(f"MD5 mismatch for {path}: expected {SOURCES['frey_face'].md5['frey_rawface.mat']}"), msg
    assert sorted(os.listdir(ws)) == ["params.yaml"]      # no data/raw, no data/prepared


def test_cli_prepare_with_missing_mirror_root(tmp_path):
    """Through the CLI: the missing-file exit code (2), the message with the layout, no traceback, no file."""
    ws = tmp_path / "ws"
    ws.mkdir()
    import yaml

    (ws / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    for name in ("catalogue.yaml", "claims.yaml"):
        shutil.copy2(REPO / name, ws / name)
    root = tmp_path / "no_mirror"
    proc = cli(ws, "prepare", "--dataset", "mnist", "--mirror", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.endswith(f"vaebench: missing file: dataset mirror root '{root}' (from --mirror or "
                                f"$VAEBENCH_DATA_MIRROR) does not exist: expected the mirror folder of 'mnist' at "
                                f"{root / 'mnist'}; the mirror of 'mnist' is laid out as\n{LAYOUT}\n"), proc.stderr
    assert sorted(os.listdir(ws)) == ["catalogue.yaml", "claims.yaml", "params.yaml"]
