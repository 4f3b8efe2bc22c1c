"""The SLURM cluster profile (profiles/slurm), checked without a cluster.

1. ``snakemake --workflow-profile profiles/slurm -n``, the README's command, validates the profile and plans
   every job with the resources of its stage declaration (vaebench.dag.STAGES: mem_mb, runtime, gpu,
   threads), and the SLURM executor plugin turns those into the sbatch flags we mean (--mem, -t, --gpus,
   --cpus-per-task, -p). No fake sinfo/sbatch is needed: a dry run plans with Snakemake's dry-run executor.
2. A real run of a tiny study through Snakemake's generic cluster executor with the same profile, where
   tests/cluster/fake_cluster.py stands in for sbatch/squeue: every job runs as a separate, detached process (a
   new session) with a scrubbed environment, in a fresh scratch folder holding a copy of the pipeline definition
   plus ONLY the job's declared inputs (read from the jobscript's embedded properties); its declared outputs,
   log and benchmark are copied back. Snakemake 9's jobscript starts with ``cd <working directory>`` and names
   the Snakefile and its own jobscript folder by absolute path; the fake cluster rewrites those paths to the
   scratch copy, so the job's own Snakemake really runs there. The run completes, its report has finite
   numbers, a rerun has nothing to do, and one model's metrics.json and per_image.npz equal those of the same
   cells run in place by a local ``snakemake --cores 2``.
3. The check has teeth: with an input left out of a stage's declaration, that job fails on the fake cluster.

   Shared by all jobs, as on a real cluster: the MLflow store ($MLFLOW_TRACKING_URI, and its artifact folder
   which the store names), the data mirror ($VAEBENCH_DATA_MIRROR) and the virtual environment's Python.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, REPO, env, make_workspace, run, tiny_params
from vaebench import dag, paths

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
import fake_cluster  # noqa: E402

pytestmark = pytest.mark.pipeline     # spawns Snakemake, DVC, MLflow or a browser: not in make test-fast

PROFILE = "profiles/slurm"
PROFILE_FILE = REPO / PROFILE / "config.yaml"
SNAKEMAKE = str(BIN / "snakemake")
# metrics.json fields that differ between two runs of the same cell (wall times, the MLflow run)
RUN_FIELDS = {"train_seconds", "eval_seconds", "mlflow_run_id"}
SHARED_STORE = paths.SHARED.split("{", 1)[0].rstrip("/")     # data/shared: the shared store (vaebench.shared)
STUDY = tiny_params()["study"]      # the study of every run here: its outputs (and logs) live under its name


def n_jobs(stage: dag.Stage, params: dict) -> int:
    """How many jobs a stage has in a study: one per value of each axis it runs over."""
    sizes = {"dataset": len(params["datasets"]), "model": len(params["models"]), "seed": len(params["seeds"])}
    return math.prod(sizes[axis] for axis in stage.over)


def planned_jobs(stdout: str) -> list[dict]:
    """Every job of a Snakemake dry run's listing: rule, threads (listed only when above 1), resources."""
    jobs = []
    for block in re.split(r"\n\[[^\]]+\]\n", stdout)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        threads = re.search(r"^    threads: (\d+)$", block, re.M)
        listed = re.search(r"^    resources: (.*)$", block, re.M).group(1)
        resources = dict(item.partition("=")[::2] for item in listed.split(", "))
        jobs.append({"rule": rule, "threads": int(threads.group(1)) if threads else 1, "resources": resources})
    return jobs


# ------------------------------------------------------------------------------------------------
# 1. The profile validates and plans every job with its declared resources

def test_profile_settings():
    """The profile uses the SLURM executor and keeps the local profile's safety settings; no per-rule
    resources: those come from the rules (dag.STAGES)."""
    profile = yaml.safe_load(PROFILE_FILE.read_text())
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] > 0
    assert {"slurm_partition", "slurm_account", "runtime"} <= set(profile["default-resources"])
    assert "set-resources" not in profile
    # GPU jobs in flight are not capped by the GPUs of the submitting (login) node (workflow/rules/common.smk)
    assert profile["resources"]["gpu_slots"] >= profile["jobs"]
    default = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    for key in ("rerun-incomplete", "printshellcmds", "show-failed-logs"):
        assert profile[key] == default[key] is True, key
    assert profile["latency-wait"] >= default["latency-wait"]
    # every setting is commented: each key is preceded by a comment line
    lines = PROFILE_FILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[\w-]+:", line):
            assert lines[i - 1].startswith("#"), line


def test_dry_run_plans_every_job_with_its_stage_resources(tmp_path):
    """`snakemake --workflow-profile profiles/slurm --configfile <study> -n` (the README's command; no
    sinfo/sbatch needed: a dry run plans with the dry-run executor after parsing the SLURM plugin's settings)
    lists each rule's jobs with mem_mb, runtime, gpu and threads from dag.STAGES and the partition from
    $VAEBENCH_SLURM_PARTITION; the SLURM plugin's own submit-string code turns them into the sbatch flags."""
    params = tiny_params(seeds=(0, 1))
    params["resources"] = {"train": {"mem_mb": 4321}}      # the study's own peak for one stage
    mem_mb = {name: params["resources"].get(name, {}).get("mem_mb", s.mem_mb) for name, s in dag.STAGES.items()}
    ws = make_workspace(tmp_path / "ws", params)
    (ws / "studies").mkdir(exist_ok=True)
    (ws / "studies/tiny.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    e = env(tmp_path, ws, VAEBENCH_SLURM_PARTITION="testpart")
    e.pop("VAEBENCH_SLURM_ACCOUNT", None)
    out = run([SNAKEMAKE, "--workflow-profile", PROFILE, "--configfile", "studies/tiny.yaml", "-n"], ws, env=e).stdout
    jobs = [j for j in planned_jobs(out) if j["rule"] != "all"]

    assert {r: sum(j["rule"] == r for j in jobs) for r in dag.STAGES} == \
        {name: n_jobs(s, params) for name, s in dag.STAGES.items()}
    for job in jobs:
        stage, res = dag.STAGES[job["rule"]], job["resources"]
        assert int(res["mem_mb"]) == mem_mb[job["rule"]], job
        assert int(res["runtime"]) == stage.runtime, job
        assert job["threads"] == stage.threads, job
        if stage.gpu:
            assert int(res["gpu"]) == 1 and int(res["gpu_slots"]) == 1, job
        else:
            assert "gpu" not in res and "gpu_slots" not in res, job
        assert res["slurm_partition"] == "testpart" and res["slurm_account"] == "", job

    # What sbatch would get: the plugin's own code on each planned job's resources and threads (the partition
    # through the executor's method; sinfo is not asked when a partition is given).
    from snakemake_executor_plugin_slurm import Executor
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    executor = SimpleNamespace(_partitions=None, _fallback_partition=None, logger=None)
    for job in jobs:
        stage = dag.STAGES[job["rule"]]
        res = Resources({k: int(v) if v.isdigit() else v for k, v in job["resources"].items()})
        fake = SimpleNamespace(threads=job["threads"], resources=res, name=job["rule"], is_group=lambda: False)
        call = get_submit_command(fake, {"run_uuid": "u", "slurm_logfile": "x.log", "comment_str": "c",
                                         "account": "", "partition": Executor.get_partition_arg(executor, fake),
                                         "workdir": str(ws)}) + set_gres_string(fake)
        words = call.split()
        assert words[words.index("--mem") + 1] == str(mem_mb[job["rule"]]), call
        assert words[words.index("-t") + 1] == str(stage.runtime), call
        assert f"--cpus-per-task={stage.threads}" in words, call
        assert ("--gpus=1" in words) == stage.gpu, call
        assert words[words.index("-p") + 1] == "testpart", call


# ------------------------------------------------------------------------------------------------
# 2. Every job runs on its own, from its declared inputs only

def check_outputs(ws: Path, params: dict) -> None:
    study = params["study"]
    summary = pd.read_csv(ws / paths.SUMMARY_CSV.format(study=study))
    assert sorted(summary["model"]) == sorted(params["models"])
    for col in ("test_elbo_nats", "test_nll_iwae_nats", "fid_classifier"):
        assert summary[col].map(math.isfinite).all(), col
    report_metrics = json.loads((ws / paths.REPORT_METRICS.format(study=study)).read_text())
    assert report_metrics
    html = (ws / paths.REPORT_HTML.format(study=study)).read_text()
    assert all(m in html for m in params["models"])
    for rel in dag.REPORT_OUTPUTS:
        assert (ws / rel.format(study=study)).exists(), rel


def cell_results(ws: Path, dataset: str, model: str, seed: int) -> tuple[dict, dict]:
    cell = paths.cell_paths(STUDY, dataset, model, seed)
    metrics = json.loads((ws / cell["metrics"]).read_text())
    with np.load(ws / cell["per_image"]) as z:
        arrays = {k: z[k] for k in z.files}
    return {k: v for k, v in metrics.items() if k not in RUN_FIELDS}, arrays


def job_files(job: dict) -> set[str]:
    """The declared files of a fake-cluster job (outputs may be folders)."""
    return set(job["input"]) | set(job["output"]) | set(job["log"]) | ({job["benchmark"]} if job["benchmark"] else set())


def cluster_cmd(state: Path) -> list[str]:
    """Snakemake with the SLURM profile, its executor swapped for the generic one driving the fake cluster."""
    helper = f"{BIN / 'python'} {Path(fake_cluster.__file__).resolve()}"
    return [SNAKEMAKE, "--workflow-profile", PROFILE, "--executor", "cluster-generic",
            "--cluster-generic-submit-cmd", f"{helper} submit", "--cluster-generic-status-cmd", f"{helper} status",
            "--jobs", "3", "--seconds-between-status-checks", "1"]


def cluster_run(tmp: Path, ws: Path, state: Path, *args: str, check: bool = True):
    e = env(tmp, ws, **{fake_cluster.STATE_ENV: str(state)})
    try:
        return run(cluster_cmd(state) + list(args), ws, env=e, timeout=400, check=check)
    finally:
        killed = fake_cluster.cancel_all(state)      # a failed or timed-out run leaves no detached job behind
        assert not killed, f"jobs {killed} were still running"


@pytest.fixture(scope="module")
def cluster_study(tmp_path_factory, mirror):
    """The tiny study run through the fake cluster: (tmp, workspace, fake-cluster state, params)."""
    tmp = tmp_path_factory.mktemp("cluster")
    params = tiny_params()
    ws = make_workspace(tmp / "ws", params)
    # the fake cluster gives each job the same pipeline definition make_workspace copies
    assert {p.name for p in ws.iterdir()} == set(fake_cluster.DEFINITION)
    cluster_run(tmp, ws, tmp / "cluster")
    return tmp, ws, tmp / "cluster", params


@pytest.mark.mirror("mnist")
def test_every_job_runs_detached_from_its_declared_inputs(cluster_study):
    tmp, ws, state, params = cluster_study
    check_outputs(ws, params)

    jobs = [json.loads(f.read_text()) for f in sorted(state.glob("*/job.json"))]
    assert {r: sum(j["rule"] == r for j in jobs) for r in dag.STAGES} == \
        {name: n_jobs(s, params) for name, s in dag.STAGES.items()}
    allowed_env = {"PATH", "HOME", "PYTHONPATH",
                   "LC_CTYPE"}   # LC_CTYPE: Python sets it itself under the C locale (PEP 538)
    for job in jobs:
        jobdir = state / job["jobid"]
        assert (jobdir / "exitcode").read_text() == "0", job["rule"]
        seen = json.loads((jobdir / "env.json").read_text())
        # its own session (detached from Snakemake's), in its scratch folder, with the scrubbed environment
        assert seen["sid"] == seen["pid"] != os.getsid(0)
        assert seen["cwd"] == job["scratch"] != str(ws)
        assert {k for k in seen["environ"] if not k.startswith(fake_cluster.KEEP_PREFIXES)} <= allowed_env
        assert seen["environ"]["PYTHONPATH"] == str(Path(job["scratch"]) / "src")
        # its scratch held no data but its declared inputs (and then its outputs); the shared store (data/shared,
        # vaebench.shared) is never copied in: what is there the job added itself, a cache entry keyed by content
        scratch = Path(job["scratch"])
        declared = job_files(job)
        store = scratch / SHARED_STORE
        for f in (scratch / "data").rglob("*"):
            if f.is_file() and not f.is_relative_to(store):
                rel = f.relative_to(scratch).as_posix()
                assert any(rel == d or rel.startswith(d + "/") for d in declared), (job["rule"], rel)
        for rel in job["input"]:
            assert (scratch / rel).exists(), rel
        # the workspace holds exactly what the job wrote
        for rel in job["output"]:
            if (scratch / rel).is_file():
                assert (ws / rel).read_bytes() == (scratch / rel).read_bytes(), rel

    # Snakemake took the copied-back outputs as complete: a rerun has nothing to do
    assert "Nothing to be done" in run([SNAKEMAKE, "--cores", "2", "-n"], ws, env=env(tmp, ws)).stdout


@pytest.mark.mirror("mnist")
def test_cluster_results_equal_a_local_run(cluster_study):
    """The same cells run in place by a local Snakemake, from the same pipeline definition (copied from the
    cluster run's workspace, times kept), prepared data, classifier and FID reference, give identical
    metrics.json (but wall times and the MLflow run) and per_image.npz."""
    tmp, ws, state, params = cluster_study
    local = tmp / "local"
    for name in fake_cluster.DEFINITION:
        fake_cluster.copy_path(ws / name, local / name)
    for stage in ("prepare", "classifier", "fid_reference"):
        for template in dag.STAGES[stage].outs.values():
            for d in params["datasets"]:
                rel = template.format(study=params["study"], dataset=d)
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ws / rel, local / rel)
    # one model's cells: a second model would add ~15 s on 2 cores (the cluster run covers both)
    model = next(iter(params["models"]))
    cells = [(d, model, s) for d in params["datasets"] for s in params["seeds"]]
    targets = [str(paths.cell_paths(params["study"], *c)["metrics"]) for c in cells]
    run([SNAKEMAKE, "--cores", "2", *targets], local, env=env(tmp, local), timeout=300)
    assert sorted(p.name for p in (local / "logs").iterdir()) == [params["study"]]
    assert sorted(p.name for p in (local / "logs" / params["study"]).iterdir()) == ["evaluate", "train"]  # only the cells ran
    for c in cells:
        cluster_metrics, cluster_arrays = cell_results(ws, *c)
        local_metrics, local_arrays = cell_results(local, *c)
        assert cluster_metrics == local_metrics, c
        assert cluster_arrays.keys() == local_arrays.keys(), c
        for k in cluster_arrays:
            assert np.array_equal(cluster_arrays[k], local_arrays[k]), (c, k)


@pytest.mark.slow   # a check of the stand-in scheduler itself (about 25 s): `make test-slow`
@pytest.mark.mirror("mnist")
def test_an_undeclared_input_fails_on_the_fake_cluster(cluster_study):
    """The scratch folders do catch a missing declaration: with the classifier dropped from the evaluate
    stage's declared inputs (it still reads it), its job fails on the fake cluster, saying which file it
    missed (in place, with the whole workspace at hand, it would run). Runs last: it edits the workspace."""
    tmp, ws, state, params = cluster_study
    with open(ws / "src/vaebench/dag.py", "a") as f:
        f.write('\nSTAGES["evaluate"].deps.pop("classifier")\n')
    cell = ("mnist", next(iter(params["models"])), params["seeds"][0])
    target = str(paths.cell_paths(params["study"], *cell)["metrics"])
    proc = cluster_run(tmp, ws, tmp / "cluster-undeclared", target, "--forcerun", "evaluate", check=False)
    assert proc.returncode != 0
    log = ws / dag.STAGES["evaluate"].log().format(study=params["study"], dataset=cell[0], model=cell[1], seed=cell[2])
    assert paths.CLASSIFIER.format(study=params["study"], dataset="mnist") in log.read_text()
