"""Eight training jobs started at once against one sqlite MLflow store all get recorded.

The pipeline creates the store and the study's experiment once (``vaebench mlflow-init``, Snakemake's
``onstart``), then runs its train jobs in parallel, each opening the same sqlite file. ``Tracker`` turns any
MLflow failure (e.g. sqlite's "database is locked") into a warning and carries on, so a lost run would not
fail a job: this test fails on that warning and reads every run back from the store.
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, env, run, tiny_params, write_random_prepared
from vaebench import paths
from vaebench.tracking import flatten

pytestmark = pytest.mark.pipeline     # spawns Snakemake, DVC, MLflow or a browser: not in make test-fast

MODELS = ["vae_bernoulli", "vae_gaussian", "sigma_vae", "info_vae"]   # different objectives / logged terms
SEEDS = [0, 1]
CELLS = [("mnist", m, s) for m in MODELS for s in SEEDS]               # 8 cells
EPOCHS = 2
STUDY = tiny_params()["study"]                                          # "tiny": its files live under its name
TRACKER_WARNING = "MLflow unavailable"      # what vaebench.tracking.Tracker warns when an MLflow call fails
MLFLOW_INFO = re.compile(r" INFO mlflow[.\w]*: ")
JOB_TIMEOUT_S = 300


@pytest.fixture()
def concurrent_workspace(tmp_path) -> Path:
    """tmp_path holding the tiny study (``study.yaml``), the catalogue it is validated against and a prepared
    'mnist' of random uint8 images (64 train, 16 validation, 16 test)."""
    for name in (paths.CATALOGUE, paths.CLAIMS):
        shutil.copy2(REPO / name, tmp_path / name)
    write_random_prepared(tmp_path, n_train=64)
    params = tiny_params(models=MODELS, seeds=SEEDS)
    params["train"].update(epochs=EPOCHS, batch_size=16)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def read_log(path: Path) -> list[dict[str, float]]:
    """A train log.csv as rows of floats (csv + float(): exactly the values pandas wrote)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def mlflow_complaints(stderr: str) -> list[str]:
    """Lines of a job's stderr that show MLflow trouble: the tracker's warning, a locked database, any other
    line naming MLflow (its warnings name it in their path, its log lines in their logger) but its INFO log
    lines (the store's creation by ``mlflow-init``)."""
    return [line for line in stderr.splitlines()
            if TRACKER_WARNING in line or "database is locked" in line
            or ("mlflow" in line.lower() and not MLFLOW_INFO.search(line))]


def test_parallel_training_jobs_all_recorded_in_one_sqlite_store(concurrent_workspace):
    import torch
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    ws = concurrent_workspace
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    # tracking on, into ws/mlflow.db (conftest.env); RuntimeWarnings (the tracker's) printed, whatever the caller's env
    job_env = env(ws, VAEBENCH_MLFLOW="1", PYTHONWARNINGS="ignore::DeprecationWarning,default::RuntimeWarning")
    assert job_env["MLFLOW_TRACKING_URI"] == uri
    job_env.pop("VAEBENCH_MLFLOW_GRID_N", None)                          # default per-epoch grids: more writes
    vaebench = [sys.executable, "-m", "vaebench"]

    # the store and the experiment, once, as the pipeline's onstart does
    init = run(vaebench + ["mlflow-init", "--params", "study.yaml"], ws, env=job_env)
    assert not mlflow_complaints(init.stderr), init.stderr
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None and not client.search_runs([exp.experiment_id])

    # all eight jobs started before any is waited on (output to files: no pipe can fill and block a job)
    logs = ws / "job_logs"
    logs.mkdir()
    jobs = []
    t0 = time.perf_counter()
    for dataset, model, seed in CELLS:
        name = f"{model}_seed{seed}"
        out, err = open(logs / f"{name}.out", "w"), open(logs / f"{name}.err", "w")
        cmd = vaebench + ["train", "--dataset", dataset, "--model", model, "--seed", str(seed),
                          "--threads", "1", "--params", "study.yaml"]
        jobs.append(((dataset, model, seed), subprocess.Popen(cmd, cwd=ws, env=job_env, stdout=out, stderr=err,
                                                              text=True), out, err))
    for _, proc, out, err in jobs:
        try:
            proc.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for _, p, _, _ in jobs:
                p.kill()
            raise
        finally:
            out.close()
            err.close()
    wall = time.perf_counter() - t0

    failures = []
    for (dataset, model, seed), proc, _, _ in jobs:
        stderr = (logs / f"{model}_seed{seed}.err").read_text()
        if proc.returncode != 0 or mlflow_complaints(stderr):
            failures.append(f"{dataset}/{model}/seed{seed}: exit {proc.returncode}\n{stderr[-3000:]}")
    assert not failures, f"{len(failures)}/{len(CELLS)} jobs failed or lost tracking " \
                         f"(8 jobs in {wall:.1f} s):\n" + "\n\n".join(failures)

    # read the store back: exactly one FINISHED run per cell in the study's experiment, nothing else
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    by_cell = {(r.data.tags.get("dataset"), r.data.tags.get("model"), r.data.tags.get("seed")): r for r in runs}
    assert len(runs) == len(CELLS) and sorted(by_cell) == sorted((d, m, str(s)) for d, m, s in CELLS), \
        sorted(by_cell)
    for dataset, model, seed in CELLS:
        r = by_cell[(dataset, model, str(seed))]
        where = f"{dataset}/{model}/seed{seed}"
        rid = r.info.run_id
        assert r.info.status == "FINISHED", (where, r.info.status)
        assert r.info.run_name == where and r.data.tags["study"] == "tiny"
        cell = paths.cell_paths(STUDY, dataset, model, seed)
        ckpt = torch.load(ws / cell["checkpoint"], weights_only=True)
        assert ckpt["mlflow_run_id"] == rid, where

        # params: the resolved cell, flattened
        assert r.data.params == {k: str(v)[:6000] for k, v in flatten(ckpt["cell"]).items()}, where

        # every per-epoch metric of the job's log.csv, at every epoch (step = epoch), with the log's values
        rows = read_log(ws / cell["train_log"])
        assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1)), where
        keys = set(rows[0]) - {"epoch"}
        assert {"train_loss", "val_loss", "seconds"} <= keys, (where, keys)
        for key in sorted(keys):
            history = client.get_metric_history(rid, f"curves/{key}")
            assert sorted((m.step, m.value) for m in history) == [(int(row["epoch"]), row[key]) for row in rows], \
                (where, key)
        assert set(r.data.metrics) == {f"curves/{k}" for k in keys} | {"results/train_seconds"}, (where, sorted(r.data.metrics))
        assert r.data.metrics["results/train_seconds"] == pytest.approx(ckpt["train_seconds"]), where

        # the files of record: the log and the checkpoint, byte-sized as on disk
        artifacts = {f.path: f.file_size for f in client.list_artifacts(rid)}
        assert artifacts.get("log.csv") == (ws / cell["train_log"]).stat().st_size, (where, artifacts)
        (model_pt,) = client.list_artifacts(rid, "checkpoint")
        assert model_pt.path == "checkpoint/model.pt", where
        assert model_pt.file_size == (ws / cell["checkpoint"]).stat().st_size, where
