"""Snakemake and DVC name the same output files for the same params (one source of truth)."""
from __future__ import annotations

from pathlib import Path

from conftest import BIN, env, make_workspace, run, tiny_params
from vaebench import paths


def snakemake_outputs(ws, tmp_path) -> set[str]:
    out = run([str(BIN / "snakemake"), "--cores", "1", "--summary"], ws, env=env(tmp_path)).stdout
    files = set()
    for line in out.splitlines()[1:]:
        name = line.split("\t")[0].strip()
        if name and not name.startswith("logs/"):
            files.add(name)
    return files


def dvc_outputs(ws) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        return {Path(o.def_path).as_posix() for stage in repo.index.stages for o in stage.outs}


def test_both_engines_name_the_same_files(tmp_path):
    params = tiny_params(models=["vae_bernoulli", "rho_vae", "sigma_vae"], seeds=[0, 3])
    ws = make_workspace(tmp_path / "ws", params, git=True)
    smk, dvc = snakemake_outputs(ws, tmp_path), dvc_outputs(ws)
    assert smk == dvc
    # and both are the paths.py templates over the grid
    assert paths.CHECKPOINT.format(dataset="mnist", model="rho_vae", seed=3) in smk
    assert len([f for f in smk if f.endswith("metrics.json") and f.startswith("data/eval")]) == 6


def test_stage_sources_match_dvc_deps(tmp_path):
    """The code each DVC stage depends on is the code paths.STAGE_SOURCES declares for Snakemake."""
    import yaml

    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    for stage, sources in paths.STAGE_SOURCES.items():
        deps = [d for d in stages[stage]["deps"] if d.startswith("src/")]
        assert deps == sources, stage
