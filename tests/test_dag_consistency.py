"""One DAG, two engines: Snakemake and DVC plan the same jobs with the same commands, inputs and outputs
(the params each engine records are compared after real runs in test_pipeline.py)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import BIN, REPO, env, make_workspace, run, tiny_params
from vaebench import dag, paths

pytestmark = pytest.mark.pipeline     # spawns Snakemake, DVC, MLflow or a browser: not in make test-fast


# ------------------------------------------------------------------------------------------------
# Both engines plan the same jobs

def snakemake_jobs(ws: Path, tmp_path: Path) -> dict[frozenset, dict]:
    """{outputs: {rule, inputs, args}} of every job of a Snakemake dry run."""
    out = run([str(BIN / "snakemake"), "--cores", "2", "--dry-run", "--forceall"], ws, env=env(tmp_path, ws)).stdout
    jobs = {}
    for block in re.split(r"\n\[[^\]]+\]\n", out)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        if rule == "all":
            continue
        field = lambda name: [x for x in re.search(rf"^    {name}: (.*)$", block, re.M).group(1).split(", ") if x]
        cmd = shlex.split(re.search(r"^Shell command: (.*)$", block, re.M).group(1))
        args = cmd[cmd.index("vaebench") + 1: cmd.index("--params")]
        jobs[frozenset(field("output"))] = {"rule": rule, "inputs": set(field("input")), "args": args}
    return jobs


def dvc_jobs(ws: Path) -> dict[frozenset, dict]:
    """{outputs: {rule, deps, args}} of every stage of dvc.yaml (the workspace's study; the other studies'
    pipelines under pipelines/ are left out), as DVC itself resolves them."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    jobs = {}
    with Repo(str(ws)) as repo:
        for stage in repo.index.stages:
            if Path(stage.path).resolve() != (ws / paths.DVC_YAML).resolve():
                continue
            outs = frozenset(Path(o.def_path).as_posix() for o in stage.outs)
            deps = {Path(d.def_path).as_posix() for d in stage.deps if not isinstance(d, ParamsDependency)}
            cmd = shlex.split(stage.cmd)
            jobs[outs] = {"rule": stage.name.split("@")[0], "deps": deps, "args": cmd[cmd.index("vaebench") + 1:]}
    return jobs


def expand(ws: Path, dep: str) -> set[str]:
    """A DVC dependency as files: a folder stands for every file below it except Python bytecode
    (.dvcignore); a folder that does not exist yet (grid outputs) stays a folder."""
    p = ws / dep
    if p.is_dir():
        return {f.relative_to(ws).as_posix() for f in p.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}
    return {dep}


def test_both_engines_plan_the_same_jobs(tmp_path):
    params = tiny_params(models={"vae_bernoulli": {}, "rho_vae": {"latent_dim": 4}, "sigma_vae": {}}, seeds=[0, 3])
    ws = make_workspace(tmp_path / "ws", params, git=True)
    smk, dvc = snakemake_jobs(ws, tmp_path), dvc_jobs(ws)
    assert set(smk) == set(dvc)
    assert sorted(j["rule"] for j in smk.values()) == sorted(
        ["prepare", "classifier", "fid_reference", "report"] + ["train", "evaluate"] * 6)
    for outs, s in smk.items():
        d = dvc[outs]
        assert s["rule"] == d["rule"] and s["args"] == d["args"], outs
        dvc_inputs = set().union(*(expand(ws, dep) for dep in d["deps"]))
        folders = {dep for dep in dvc_inputs if not (ws / dep).exists() and not Path(dep).suffix}
        # every per-cell input Snakemake lists lies in a folder DVC tracks, and each such folder is used
        grid = {f for f in s["inputs"] if any(f.startswith(folder + "/") for folder in folders)}
        assert s["inputs"] - grid == dvc_inputs - folders, outs
        assert {f for folder in folders for f in grid if f.startswith(folder + "/")} == grid
        assert all(any(f.startswith(folder + "/") for f in grid) for folder in folders)
    # and both are the paths.py templates over the grid
    cell = dict(study=params["study"], dataset="mnist", model="rho_vae", seed=3)
    assert frozenset({paths.CHECKPOINT.format(**cell), paths.TRAIN_LOG.format(**cell)}) in smk


