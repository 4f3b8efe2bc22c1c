"""End to end on real MNIST (a subset from the mirror): real Snakemake, real `dvc repro` in a fresh git
repo, a real MLflow sqlite store. Each engine builds the report, reruns as a no-op, and reruns only the
cells of a model whose definition changed; both engines record the same inputs and params for every job."""
from __future__ import annotations

import ast
import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, REPO, TINY_MODELS, env, make_workspace, run, tiny_params
from vaebench import dag, paths

pytestmark = pytest.mark.pipeline     # spawns Snakemake, DVC, MLflow or a browser: not in make test-fast

# The workspace study's DVC pipeline: the target of every DVC command that would otherwise cover every pipeline of
# the repository (`dvc repro` reads dvc.yaml by default; `dvc status`, `push` and `pull` take the other studies'
# pipelines under pipelines/ too, which these workspaces hold but never run).
STUDY_PIPELINE = paths.DVC_YAML

SUMMARY_COLUMNS = [
    "dataset", "model", "seed", "test_elbo_nats", "test_recon_nats", "test_kl_nats",
    "test_nll_iwae_nats", "iwae_k", "bits_per_dim", "fid_classifier", "train_seconds",
]


def study() -> dict:
    """The tiny study with one per-model override, so that override slices are tracked too."""
    params = tiny_params()
    params["models"]["sigma_vae_optimal"] = {"train": {"lr": 0.002}}
    return params


def check_report(ws, params):
    study = params["study"]                 # every output of the study lives under its name
    summary = pd.read_csv(ws / paths.SUMMARY_CSV.format(study=study))
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert sorted(summary["model"]) == sorted(params["models"])
    for col in ("test_elbo_nats", "test_nll_iwae_nats", "fid_classifier"):
        assert summary[col].map(math.isfinite).all(), col
    # L_k is a tighter bound than the single-sample ELBO on the same images: paired, within 3 standard errors
    for model in params["models"]:
        with np.load(ws / paths.PER_IMAGE.format(study=study, dataset="mnist", model=model, seed=0)) as z:
            gap = z["L_k"] - z["elbo"]
        assert gap.mean() > -3 * gap.std(ddof=1) / math.sqrt(len(gap)), model
    assert (summary["iwae_k"] == params["evaluate"]["iwae_k"]).all()
    assert (summary["n_images"] == params["evaluate"]["n_images"]).all()
    bern = summary.set_index("model").loc["vae_bernoulli"]
    assert 50 < bern["test_nll_iwae_nats"] < 300  # binarised MNIST after one tiny epoch
    json.loads((ws / paths.REPORT_METRICS.format(study=study)).read_text())
    html = (ws / paths.REPORT_HTML.format(study=study)).read_text()
    assert all(m in html for m in params["models"])
    assert (ws / paths.REPORT_MD.format(study=study)).is_file()


def snapshot(ws: Path) -> dict:
    """What each engine recorded about its jobs: Snakemake's metadata per output, DVC's lock file."""
    meta_dir = ws / ".snakemake" / "metadata"
    smk = {}
    if meta_dir.is_dir():
        for f in meta_dir.iterdir():
            smk[base64.b64decode(f.name).decode()] = json.loads(f.read_text())
    lock = ws / "dvc.lock"
    return {"snakemake": smk, "dvc": yaml.safe_load(lock.read_text()) if lock.is_file() else None}


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory, mirror):
    tmp = tmp_path_factory.mktemp("smk")
    params = study()
    ws = make_workspace(tmp / "ws", params)
    run([str(BIN / "snakemake"), "--cores", "2"], ws, env=env(tmp, ws), timeout=900)
    return ws, tmp, params, snapshot(ws)


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory, mirror):
    tmp = tmp_path_factory.mktemp("dvc")
    params = study()
    ws = make_workspace(tmp / "ws", params, git=True)
    run([str(BIN / "dvc"), "repro"], ws, env=env(tmp, ws), timeout=900)
    return ws, tmp, params, snapshot(ws)


def dry_run_jobs(ws, tmp_path) -> dict[str, int]:
    """Snakemake's planned jobs per rule (empty when there is nothing to do)."""
    out = run([str(BIN / "snakemake"), "--cores", "2", "--dry-run"], ws, env=env(tmp_path, ws)).stdout
    jobs = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", out + "\n\n", re.S)
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total", "all"):
                jobs[parts[0]] = int(parts[1])
    return jobs


def edit_yaml(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def downstream(stages: set[str]) -> set[str]:
    """``stages`` and every stage that reads an output of one of them, transitively (from vaebench.dag)."""
    out, changed = set(stages), True
    while changed:
        changed = False
        for name, s in dag.STAGES.items():
            reads = set(s.deps.values()) | set(s.grid_deps.values())
            if name not in out and any(reads & set(dag.STAGES[u].outs.values()) for u in out):
                out.add(name)
                changed = True
    return out


@pytest.mark.parametrize("edited", ["registry.py", "metrics/latent.py"])
def test_a_source_edit_reruns_exactly_the_stages_that_import_it(edited, snakemake_run, dvc_run, tmp_path):
    """A comment added to a module in a copy of a finished workspace: DVC finds exactly the stages whose computed
    sources hold it changed, and Snakemake plans those and what reads their outputs; nothing else. (Runs before
    the tests that change the workspaces.)"""
    direct = {name for name in dag.STAGES if f"src/vaebench/{edited}" in dag.source_files(name)}
    assert "evaluate" in direct and (edited != "registry.py" or "train" in direct)
    assert edited == "registry.py" or direct == {"evaluate"}

    smk = shutil.copytree(snakemake_run[0], tmp_path / "smk", symlinks=True)
    assert dry_run_jobs(smk, tmp_path) == {}
    with open(smk / "src/vaebench" / edited, "a") as f:
        f.write("# an edit\n")
    assert set(dry_run_jobs(smk, tmp_path)) == downstream(direct)

    ws = shutil.copytree(dvc_run[0], tmp_path / "dvc", symlinks=True)
    dvc = str(BIN / "dvc")
    assert json.loads(run([dvc, "status", "--json", STUDY_PIPELINE], ws, env=env(tmp_path, ws)).stdout or "{}") == {}
    with open(ws / "src/vaebench" / edited, "a") as f:
        f.write("# an edit\n")
    changed = json.loads(run([dvc, "status", "--json", STUDY_PIPELINE], ws, env=env(tmp_path, ws)).stdout)
    assert {name.split("@")[0] for name in changed} == direct
    for name, entries in changed.items():
        deps = [d for e in entries if isinstance(e, dict) for d in e.get("changed deps", {})]
        assert deps == [f"src/vaebench/{edited}"], (name, entries)


def test_engines_record_the_same_inputs_and_params(snakemake_run, dvc_run):
    """For every job, the inputs and the params slices (file, key, value) Snakemake recorded equal those in
    dvc.lock: the two DAGs come from one declaration and track the same things."""
    smk, lock = snakemake_run[3]["snakemake"], dvc_run[3]["dvc"]["stages"]
    compared = 0
    for name, entry in lock.items():
        first_out = entry["outs"][0]["path"] if "outs" in entry else next(iter(entry["metrics"]))
        meta = smk[first_out]
        assert meta["rule"] == name.split("@")[0]
        # params: Snakemake's values are (file, key, value) tuples; DVC's are {file: {key: value}}
        smk_params = {}
        for text in meta["params"]:
            file, key, value = ast.literal_eval(text)
            smk_params.setdefault({"study": "params.yaml", "catalogue": "catalogue.yaml"}[file], {})[key] = value
        assert smk_params == entry.get("params", {}), name
        # inputs: DVC folders stand for the files below them
        dvc_deps = {d["path"] for d in entry.get("deps", [])}
        smk_inputs = set(meta["input"])
        for dep in dvc_deps:
            below = {f for f in smk_inputs if f.startswith(dep + "/")}
            smk_inputs = (smk_inputs - below) | ({dep} if below else set())
        assert smk_inputs == dvc_deps, name
        compared += 1
    assert compared == 4 + 2 * len(TINY_MODELS)   # prepare, classifier, fid_reference, report + train/evaluate per model


def test_snakemake_end_to_end(snakemake_run):
    ws, tmp, params, _ = snakemake_run
    check_report(ws, params)

    # MLflow: one run per cell, tagged, with training curves and evaluation metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(TINY_MODELS)
    for r in runs:
        assert {"curves/val_loss", "results/test_nll_iwae_nats", "results/fid_classifier"} <= set(r.data.metrics)
        assert r.data.params["model_config.latent_dim"] == "20"
        # evaluation settings are tags, not metrics (no one-dot charts of fid_n or iwae_k); every key is in a section
        assert not {"fid_n", "iwae_k", "n_images", "latent_n", "lk_tolerance_nats"} & {k.split("/")[-1] for k in r.data.metrics}
        assert {k.split("/")[0] for k in r.data.metrics} == {"curves", "results"}
        assert r.data.tags["eval.iwae_k"] == str(params["evaluate"]["iwae_k"])

    # second run: nothing to do
    assert dry_run_jobs(ws, tmp) == {}
    # a model's catalogue entry changes: only its cells and the report rerun
    edit_yaml(ws / "catalogue.yaml", lambda c: c["models"]["vae_bernoulli"].update(latent_dim=8))
    assert dry_run_jobs(ws, tmp) == {"train": 1, "evaluate": 1, "report": 1}
    # so does a study override of one model
    edit_yaml(ws / "catalogue.yaml", lambda c: c["models"]["vae_bernoulli"].update(latent_dim=20))
    assert dry_run_jobs(ws, tmp) == {}
    edit_yaml(ws / "params.yaml", lambda p: p["models"]["sigma_vae_optimal"]["train"].update(lr=0.003))
    assert dry_run_jobs(ws, tmp) == {"train": 1, "evaluate": 1, "report": 1}


def test_dvc_remote_round_trip(dvc_run, tmp_path):
    """The committed default remote is a folder outside the repository; after `dvc repro` and `dvc push`, a fresh
    clone gets every output with `dvc pull`, `dvc status` is clean and `dvc repro` runs nothing. (Runs before
    test_dvc_end_to_end, which changes the workspace.)"""
    ws, tmp, params, _ = dvc_run
    dvc = str(BIN / "dvc")
    name = run([dvc, "remote", "default"], REPO).stdout.strip()
    url = dict(line.split()[:2] for line in run([dvc, "remote", "list"], REPO).stdout.splitlines())[name]
    assert not Path(url).resolve().is_relative_to(REPO)         # beside the repository, never inside it

    remote = tmp_path / "remote"        # the same remote name, its url set per machine as the README says
    run([dvc, "remote", "add", "--local", "-d", name, str(remote)], ws)
    run(["git", "add", "-A"], ws)        # dvc.lock, the uncached report files; the cached outputs stay out of git
    run(["git", "commit", "-q", "-m", "study run"], ws)
    assert "pushed" in run([dvc, "push", STUDY_PIPELINE], ws, env=env(tmp, ws)).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ws), str(clone)], tmp_path)
    run([dvc, "remote", "add", "--local", "-d", name, str(remote)], clone)
    outs = [o["path"] for stage in yaml.safe_load((clone / "dvc.lock").read_text())["stages"].values()
            for o in stage.get("outs", [])]
    assert outs and not all((clone / o).exists() for o in outs)    # the cached outputs are not in git
    run([dvc, "pull", STUDY_PIPELINE], clone, env=env(tmp, clone))
    for o in outs:
        assert (clone / o).exists(), o
        if (clone / o).is_file():
            assert (clone / o).read_bytes() == (ws / o).read_bytes(), o
    assert run([dvc, "status", STUDY_PIPELINE], clone, env=env(tmp, clone)).stdout.strip().startswith(
        "Data and pipelines are up to date")
    assert "Running stage" not in run([dvc, "repro"], clone, env=env(tmp, clone), timeout=600).stdout


def test_dvc_end_to_end(dvc_run):
    ws, tmp, params, _ = dvc_run
    dvc = str(BIN / "dvc")
    check_report(ws, params)

    second = run([dvc, "repro"], ws, env=env(tmp, ws)).stdout
    assert "Running stage" not in second
    assert run([dvc, "status", STUDY_PIPELINE], ws, env=env(tmp, ws)).stdout.strip().startswith(
        "Data and pipelines are up to date")

    edit_yaml(ws / "catalogue.yaml", lambda c: c["models"]["vae_bernoulli"].update(latent_dim=8))
    third = run([dvc, "repro"], ws, env=env(tmp, ws), timeout=900).stdout
    ran = sorted(re.findall(r"Running stage '([^']+)'", third))
    assert ran == ["evaluate@mnist-vae_bernoulli-0", "report", "train@mnist-vae_bernoulli-0"]

    # MLflow unreachable: the job warns, finishes, and loses no result
    ckpt = ws / paths.CHECKPOINT.format(study=params["study"], dataset="mnist", model="sigma_vae_optimal", seed=0)
    before = ckpt.stat().st_mtime_ns
    proc = run([str(BIN / "python"), "-m", "vaebench", "train", "--dataset", "mnist", "--model", "sigma_vae_optimal",
                "--seed", "0"], ws, env=env(tmp, ws, MLFLOW_TRACKING_URI="http://127.0.0.1:9"), timeout=300)
    assert "MLflow unavailable" in proc.stderr
    assert ckpt.stat().st_mtime_ns > before
    import torch

    assert torch.load(ckpt, weights_only=True)["mlflow_run_id"] is None
