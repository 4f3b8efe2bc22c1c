"""Resumable training (vaebench.stages.train): a job stopped after any finished epoch and rerun ends with the
checkpoint and log of an uninterrupted run, bit for bit (timings aside), in the same MLflow run; a resume file
written under other params, code or a damaged one is ignored with a warning; the file is gone when the job ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import REPO, at_mnist_size, env, image_models, make_workspace, run, tiny_params, write_random_prepared
from vaebench import paths
from vaebench.config import validate_study
from vaebench.stages import train as train_stage
from vaebench.stages.train import ResumeIgnoredWarning

EPOCHS = 3
STUDY = tiny_params()["study"]     # the study of every cell here (its files live under its name)


def catalogue_models() -> list[str]:
    import yaml

    with open(REPO / paths.CATALOGUE) as f:
        return image_models(yaml.safe_load(f)["models"])


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """A prepared dataset of random uint8 'images' in tmp_path, MLflow off."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEBENCH_MLFLOW", "0")
    write_random_prepared(tmp_path, n_train=96)
    return tmp_path


def study(models, **train):
    params = tiny_params(models=at_mnist_size(models))
    params["train"].update(epochs=EPOCHS, batch_size=32, **train)
    return validate_study(params, catalogue=REPO / paths.CATALOGUE)


def outputs(model: str) -> tuple[dict, pd.DataFrame, dict]:
    """The finished cell: (state_dict, per-epoch log without timings, checkpoint meta without timings)."""
    cell = paths.cell_paths(STUDY, "mnist", model, 0)
    ckpt = torch.load(cell["checkpoint"], weights_only=True)
    log = pd.read_csv(cell["train_log"]).drop(columns="seconds")
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "train_seconds", "history")}
    return ckpt["state_dict"], log, meta


def interrupt_in_epoch(monkeypatch, epoch: int):
    """Make the next training job die inside ``epoch``, after some of its steps have changed the model and
    optimiser (as a SIGKILL mid-epoch would: nothing of that epoch reaches the disk)."""
    real = train_stage.train_epoch
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    def dying(model, opt, x_train, batch_size, batch_gen, data_gen, desc=""):
        calls["n"] += 1
        if calls["n"] == epoch:
            real(model, opt, x_train[: len(x_train) // 2], batch_size, batch_gen, data_gen)
            raise Killed()
        return real(model, opt, x_train, batch_size, batch_gen, data_gen, desc)

    monkeypatch.setattr(train_stage, "train_epoch", dying)
    return Killed


@pytest.mark.parametrize("model", catalogue_models())
def test_resumed_training_is_bit_identical(workspace, monkeypatch, model):
    """Every catalogue model (so every objective's and likelihood's state: GECO's lambda and moving average,
    the optimal sigma's accumulators, InfoVAE's and IWAE's sampling), stopped in epoch 2 of 3 and rerun,
    ends with exactly the weights, buffers and per-epoch log of an uninterrupted run."""
    s = study([model])
    train_stage.run(s, "mnist", model, 0)
    reference = outputs(model)
    resume = paths.cell_paths(STUDY, "mnist", model, 0)["resume"]
    assert not resume.exists()  # removed when the job finishes
    for f in ("checkpoint", "train_log"):
        paths.cell_paths(STUDY, "mnist", model, 0)[f].unlink()

    with monkeypatch.context() as m:
        killed = interrupt_in_epoch(m, epoch=2)
        with pytest.raises(killed):
            train_stage.run(s, "mnist", model, 0)
    assert resume.is_file() and not paths.cell_paths(STUDY, "mnist", model, 0)["checkpoint"].exists()
    state = torch.load(resume, weights_only=True)  # loadable without pickle
    assert state["progress"]["epoch"] == 1 and len(state["progress"]["history"]) == 1

    train_stage.run(s, "mnist", model, 0)
    weights, log, meta = outputs(model)
    assert weights.keys() == reference[0].keys()
    for k in weights:
        assert torch.equal(weights[k], reference[0][k]), f"{model}: {k} differs after resuming"
    pd.testing.assert_frame_equal(log, reference[1], check_exact=True)
    assert meta == reference[2]
    assert not resume.exists()


def test_resume_file_from_other_params_or_damaged_is_ignored(workspace, monkeypatch):
    s = study(["vae_bernoulli"])
    train_stage.run(s, "mnist", "vae_bernoulli", 0)
    reference = outputs("vae_bernoulli")
    cell = paths.cell_paths(STUDY, "mnist", "vae_bernoulli", 0)

    # a resume file left by a job with another learning rate: never mixed in
    with monkeypatch.context() as m:
        killed = interrupt_in_epoch(m, epoch=2)
        with pytest.raises(killed):
            train_stage.run(study(["vae_bernoulli"], lr=3e-3), "mnist", "vae_bernoulli", 0)
    assert cell["resume"].is_file()
    with pytest.warns(ResumeIgnoredWarning, match=r"resume\.pt: written with different cell \(.*train"):
        train_stage.run(s, "mnist", "vae_bernoulli", 0)
    weights, log, _ = outputs("vae_bernoulli")
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights)
    pd.testing.assert_frame_equal(log, reference[1], check_exact=True)

    # ... or by other code
    with monkeypatch.context() as m:
        killed = interrupt_in_epoch(m, epoch=2)
        with pytest.raises(killed):
            train_stage.run(s, "mnist", "vae_bernoulli", 0)
    with monkeypatch.context() as m, pytest.warns(ResumeIgnoredWarning, match="different code_sha256"):
        m.setattr(train_stage, "code_sha256", lambda model_config: "0" * 64)
        train_stage.run(s, "mnist", "vae_bernoulli", 0)

    # a damaged file
    cell["resume"].write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.warns(ResumeIgnoredWarning, match="unreadable"):
        train_stage.run(s, "mnist", "vae_bernoulli", 0)
    weights, _, _ = outputs("vae_bernoulli")
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights)
    assert not cell["resume"].exists()


def test_code_fingerprint_covers_the_train_stage_sources_of_the_cells_components():
    """The fingerprint hashes exactly the train stage's computed sources for the cell's components (so a code change
    DVC or Snakemake would rerun the job for also invalidates its resume file), and not another component's."""
    import hashlib

    from vaebench.dag import components, source_paths
    from vaebench.sources import PACKAGE_DIR

    model_config = validate_study(tiny_params()).cell("mnist", "vae_bernoulli", 0).model_config
    used = components([model_config])
    h = hashlib.sha256()
    for f in source_paths("train", used):
        h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    assert train_stage.code_sha256(model_config) == h.hexdigest()
    files = {f.relative_to(PACKAGE_DIR).as_posix() for f in source_paths("train", used)}
    assert {"registry.py", "vae/likelihoods/__init__.py", "vae/likelihoods/bernoulli.py"} <= files
    assert "vae/likelihoods/gaussian.py" not in files


# -- a real SIGKILL of a real training process, with a real MLflow sqlite store ------------------------

@pytest.mark.mirror("mnist")
@pytest.mark.pipeline
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path):
    """``vaebench train`` killed with SIGKILL in the middle of an epoch, then rerun: it resumes after the last
    finished epoch, in the same MLflow run (each epoch's metrics logged once), and the checkpoint and log equal
    those of an uninterrupted run."""
    params = tiny_params(models=["sigma_vae_optimal"])
    params["datasets"]["mnist"].update({"max_train": 6000})
    params["train"].update(epochs=4, batch_size=50)
    ws = make_workspace(tmp_path / "ws", params)
    e = env(tmp_path, ws)
    vb = [sys.executable, "-m", "vaebench"]
    run(vb + ["mlflow-init"], ws, env=e)
    run(vb + ["prepare", "--dataset", "mnist"], ws, env=e)
    train = vb + ["train", "--dataset", "mnist", "--model", "sigma_vae_optimal", "--seed", "0", "--threads", "1"]
    cell = {k: ws / v for k, v in paths.cell_paths(STUDY, "mnist", "sigma_vae_optimal", 0).items()}

    run(train, ws, env=e)
    reference = (torch.load(cell["checkpoint"], weights_only=True),
                 pd.read_csv(cell["train_log"]).drop(columns="seconds"))
    cell["checkpoint"].unlink()
    cell["train_log"].unlink()

    proc = subprocess.Popen(train, cwd=ws, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not cell["resume"].exists():  # epoch 1 finished: kill in epoch 2
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(cell["resume"], weights_only=True)["progress"]["epoch"]
    assert 1 <= done < 4 and not cell["checkpoint"].exists()

    rerun = run(train, ws, env=e)
    assert f"resuming after epoch {done}/4" in rerun.stderr
    ckpt = torch.load(cell["checkpoint"], weights_only=True)
    for k, v in reference[0]["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][k], v), k
    pd.testing.assert_frame_equal(pd.read_csv(cell["train_log"]).drop(columns="seconds"), reference[1],
                                  check_exact=True)
    assert not cell["resume"].exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(e["MLFLOW_TRACKING_URI"])
    resumed = client.get_run(ckpt["mlflow_run_id"])
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_after_epoch"] == str(done)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "curves/val_loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    values = {m.step: m.value for m in client.get_metric_history(resumed.info.run_id, "curves/val_loss")}
    assert [values[s] for s in (1, 2, 3, 4)] == list(reference[1]["val_loss"])
