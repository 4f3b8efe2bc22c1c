"""A whole study killed with SIGKILL while a training job runs, under each engine, then recovered as the README
says ("Recovering and scaling out"): the rerun completes, the killed training job resumes after its last finished
epoch, and every number equals that of an uninterrupted run. Real Snakemake, real DVC, real MLflow sqlite store,
real MNIST from the mirror."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import BIN, env, make_workspace, run, tiny_params
from vaebench import dag, paths

pytestmark = [pytest.mark.mirror("mnist"), pytest.mark.pipeline]

STUDY = tiny_params()["study"]                                   # every output of the study lives under its name
EVAL_DIR, TRAIN_DIR, HISTORY_DIR = (paths.grid_folder(t).format(study=STUDY)
                                    for t in (paths.METRICS, paths.CHECKPOINT, paths.TRAIN_LOG))


def params() -> dict:
    """The tiny study with 3 epochs on 4,000 images, so that training jobs live long enough to be killed."""
    p = tiny_params()
    p["datasets"]["mnist"]["max_train"] = 4000
    p["train"]["epochs"] = 3
    return p


def results(ws: Path) -> dict:
    """Every number the study produced, timings (and MLflow run ids: each workspace has its own store) dropped: each cell's metrics.json and per-image arrays, the
    per-epoch logs, the summary table."""
    out = {}
    for f in sorted((ws / EVAL_DIR).rglob("metrics.json")):
        out[str(f.relative_to(ws))] = {k: v for k, v in json.loads(f.read_text()).items()
                                      if "seconds" not in k and k != "mlflow_run_id"}
    for f in sorted((ws / EVAL_DIR).rglob("per_image.npz")):
        with np.load(f) as z:
            out[str(f.relative_to(ws))] = {k: z[k].tolist() for k in z.files}
    for f in sorted((ws / HISTORY_DIR).rglob("log.csv")):
        out[str(f.relative_to(ws))] = pd.read_csv(f).drop(columns="seconds").astype(str).to_dict("list")
    summary = pd.read_csv(ws / paths.SUMMARY_CSV.format(study=STUDY))
    dropped = [c for c in summary.columns if "seconds" in c or c == "mlflow_run_id"]
    out["summary"] = summary.drop(columns=dropped).astype(str).to_dict("list")  # str: exact, and NaN == NaN
    return out


def assert_same(found: dict, expected: dict) -> None:
    """Equal, or fail naming the file and key that differ."""
    assert found.keys() == expected.keys()
    for f in expected:
        if isinstance(expected[f], dict):
            diff = {k: (found[f].get(k), v) for k, v in expected[f].items() if found[f].get(k) != v}
            assert not diff and found[f].keys() == expected[f].keys(), f"{f}: {diff}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    ws = make_workspace(tmp / "ws", params())
    run([str(BIN / "snakemake"), "--cores", "2"], ws, env=env(tmp, ws))
    return results(ws)


def kill_during_training(cmd: list[str], ws: Path, e: dict) -> Path:
    """Start ``cmd`` (an engine) in its own process group, wait until a training job has finished its first epoch
    (its resume file exists), let it go on into the next epoch, then SIGKILL the engine and every job it started.
    Returns the resume file."""
    proc = subprocess.Popen(cmd, cwd=ws, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while True:
            found = list((ws / TRAIN_DIR).rglob("resume.pt")) if (ws / TRAIN_DIR).is_dir() else []
            if found:
                break
            assert proc.poll() is None, f"{cmd} ended ({proc.returncode}) before any training epoch finished"
            assert time.monotonic() < deadline, "no training epoch finished within 300 s"
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return found[0]


def test_snakemake_killed_mid_training_recovers(tmp_path, uninterrupted):
    ws = make_workspace(tmp_path / "ws", params())
    e = env(tmp_path, ws)
    smk = [str(BIN / "snakemake"), "--cores", "2"]
    resume = kill_during_training(smk, ws, e)
    dataset, model, seed = resume.parent.relative_to(ws / TRAIN_DIR).parts  # <dataset>/<model>/seed<seed>

    # as a user meets it: the lock left by the killed run stops the next one, and says what to do
    locked = run(smk, ws, check=False, env=e)
    assert locked.returncode != 0
    assert "Directory cannot be locked" in locked.stderr and "--unlock" in locked.stderr
    assert resume.is_file()  # Snakemake left it alone

    run([str(BIN / "snakemake"), "--unlock"], ws, env=e)
    # the profile's rerun-incomplete: jobs the kill interrupted are rerun, not trusted
    run(smk, ws, env=e)
    log = (ws / dag.STAGES["train"].log().format(study=STUDY, dataset=dataset, model=model,
                                                  seed=seed.removeprefix("seed"))).read_text()
    assert "resuming after epoch" in log, log
    assert not list((ws / TRAIN_DIR).rglob("resume.pt"))
    assert_same(results(ws), uninterrupted)
    assert "Nothing to be done" in run(smk + ["-n"], ws, env=e).stdout


def test_dvc_repro_killed_mid_training_recovers(tmp_path, uninterrupted):
    ws = make_workspace(tmp_path / "ws", params(), git=True)
    e = env(tmp_path, ws)
    dvc = [str(BIN / "dvc"), "repro"]
    resume = kill_during_training(dvc, ws, e)
    cell = str(resume.parent.relative_to(ws / TRAIN_DIR)).replace("/seed", "-").replace("/", "-")

    # DVC clears the killed process's stale locks itself, reruns every stage whose outputs do not match
    # dvc.lock, and the killed training job resumes
    rerun = run(dvc, ws, env=e)
    assert "had been killed" in rerun.stderr
    assert f"Running stage 'train@{cell}'" in rerun.stdout
    assert "resuming after epoch" in rerun.stderr
    assert not list((ws / TRAIN_DIR).rglob("resume.pt"))
    assert_same(results(ws), uninterrupted)
    status = run([str(BIN / "dvc"), "status", paths.DVC_YAML], ws, env=e).stdout    # the study's pipeline (not pipelines/*)
    assert "up to date" in status, status
