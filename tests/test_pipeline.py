"""End to end on real MNIST (a subset from the mirror): real Snakemake, real `dvc repro` in a fresh git
repo, a real MLflow sqlite store. Each engine builds the report, then reruns as a no-op, then reruns
only the cells of a model whose params changed."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import yaml

from conftest import BIN, TINY_MODELS, env, make_workspace, run, tiny_params

SUMMARY_COLUMNS = [
    "dataset", "model", "seed", "test_elbo_nats", "test_recon_nats", "test_kl_nats",
    "test_nll_iwae_nats", "iwae_k", "bits_per_dim", "fid_classifier", "train_seconds",
]


def check_report(ws, params):
    summary = pd.read_csv(ws / "reports/summary.csv")
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert sorted(summary["model"]) == sorted(params["grid"]["models"])
    for col in ("test_elbo_nats", "test_nll_iwae_nats", "fid_classifier"):
        assert summary[col].map(math.isfinite).all(), col
    # L_k is a tighter bound than the single-sample ELBO (allow Monte Carlo noise)
    assert (summary["test_nll_iwae_nats"] <= -summary["test_elbo_nats"] + 5.0).all()
    assert (summary["iwae_k"] == params["evaluate"]["iwae_k"]).all()
    bern = summary.set_index("model").loc["vae_bernoulli"]
    assert 50 < bern["test_nll_iwae_nats"] < 300  # binarised MNIST after one tiny epoch
    json.loads((ws / "reports/metrics.json").read_text())
    html = (ws / "reports/index.html").read_text()
    assert all(m in html for m in params["grid"]["models"])
    assert (ws / "reports/index.md").is_file()


def dry_run_jobs(ws, tmp_path) -> dict[str, int]:
    """Snakemake's planned jobs per rule (empty when there is nothing to do)."""
    out = run([str(BIN / "snakemake"), "--cores", "2", "--dry-run"], ws, env=env(tmp_path)).stdout
    jobs = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", out + "\n\n", re.S)
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total", "all"):
                jobs[parts[0]] = int(parts[1])
    return jobs


def test_snakemake_end_to_end(tmp_path, mirror):
    params = tiny_params()
    ws = make_workspace(tmp_path / "ws", params)
    run([str(BIN / "snakemake"), "--cores", "2"], ws, env=env(tmp_path), timeout=900)
    check_report(ws, params)

    # MLflow: one run per cell, tagged, with training curves and evaluation metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(TINY_MODELS)
    for r in runs:
        assert {"val_loss", "test_nll_iwae_nats", "fid_classifier"} <= set(r.data.metrics)
        assert r.data.params["model_cfg.latent_dim"] == "20"

    # second run: nothing to do
    assert dry_run_jobs(ws, tmp_path) == {}
    # change one model's params: only that model's cells and the report rerun
    params["models"]["vae_bernoulli"]["latent_dim"] = 8
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert dry_run_jobs(ws, tmp_path) == {"train": 1, "evaluate": 1, "report": 1}


def test_dvc_end_to_end(tmp_path, mirror):
    params = tiny_params()
    ws = make_workspace(tmp_path / "ws", params, git=True)
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], ws, env=env(tmp_path), timeout=900)
    check_report(ws, params)

    second = run([dvc, "repro"], ws, env=env(tmp_path)).stdout
    assert "Running stage" not in second
    assert run([dvc, "status"], ws, env=env(tmp_path)).stdout.strip().startswith("Data and pipelines are up to date")

    params["models"]["vae_bernoulli"]["latent_dim"] = 8
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run([dvc, "repro"], ws, env=env(tmp_path), timeout=900).stdout
    ran = sorted(re.findall(r"Running stage '([^']+)'", third))
    assert ran == ["evaluate@mnist-vae_bernoulli-0", "report", "train@mnist-vae_bernoulli-0"]

    # MLflow unreachable: the job warns, finishes, and loses no result
    ckpt = ws / "data/train/mnist/sigma_vae_optimal/seed0/model.pt"
    before = ckpt.stat().st_mtime_ns
    proc = run([str(BIN / "python"), "-m", "vaebench", "train", "--dataset", "mnist", "--model", "sigma_vae_optimal", "--seed", "0"],
               ws, env=env(tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:9"), timeout=300)
    assert "MLflow unavailable" in proc.stderr
    assert ckpt.stat().st_mtime_ns > before
    import torch

    assert torch.load(ckpt, weights_only=True)["mlflow_run_id"] is None
