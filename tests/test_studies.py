"""Studies coexist, in both engines: run study A, then study B (a sweep), then A again plans nothing; B never
touches A's files; work identical across studies (the prepared data, the classifier) comes from the shared store;
the sweep's points and two hierarchical VAEs (tiny sizes) go through training, evaluation and the report. Also:
every committed study is valid, names its own file and has a current DVC pipeline."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import BIN, MNIST_OVERRIDES, REPO, env, make_workspace, run, tiny_params
from vaebench import paths


def _a() -> dict:
    params = tiny_params(models=["vae_bernoulli"])
    params["study"] = "study_a"
    return params


HIERARCHICAL = {
    "iwae_2layer_vae": {"latent_dim": 6, "architecture": {"name": "iwae_mlp2", "latent_dims": [4, 2],
                                                          "hidden_dims": [[16], [8]]}},
    "hvae_sigma": MNIST_OVERRIDES["hvae_sigma"]}


def _b() -> dict:
    """A sweep, written as a newcomer may: without the optional keys ``device`` and ``components`` (defaults); with
    the two hierarchical VAEs at tiny sizes."""
    params = tiny_params(models={"vae_bernoulli": {"sweep": {"latent_dim": [2, 4]}}, **HIERARCHICAL})
    params["study"] = "study_b"
    del params["device"], params["components"]
    return params


def _digests(root: Path, study: str) -> dict[str, str]:
    base = root / paths.STUDY_DATA.format(study=study)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from conftest import check_mirror

    check_mirror("mnist")
    tmp = tmp_path_factory.mktemp("studies")
    ws = make_workspace(tmp / "ws", _a())
    (ws / "studies").mkdir(exist_ok=True)
    (ws / "studies" / "study_b.yaml").write_text(yaml.safe_dump(_b(), sort_keys=False))
    return tmp, ws


@pytest.mark.pipeline
def test_studies_coexist_in_snakemake(workspace):
    tmp, ws = workspace
    e = env(tmp, ws)
    snake = [str(BIN / "snakemake"), "--cores", "2"]
    run(snake, ws, env=e)
    a_files = _digests(ws, "study_a")
    run(snake + ["--configfile", "studies/study_b.yaml"], ws, env=e)
    # B's prepare and classifier were copied from the store A filled: same bytes, no training
    for t in (paths.PREPARED, paths.CLASSIFIER):
        assert (ws / t.format(study="study_b", dataset="mnist")).read_bytes() == \
            (ws / t.format(study="study_a", dataset="mnist")).read_bytes()
    assert "[shared] prepared mnist" in (ws / "logs/study_b/prepare/mnist.log").read_text()
    assert "[shared] classifier mnist" in (ws / "logs/study_b/classifier/mnist.log").read_text()
    # A again: nothing to do, and none of A's files changed
    dry = run(snake + ["-n"], ws, env=e)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    assert _digests(ws, "study_a") == a_files
    # the sweep: two models through evaluation and the report, with its figure
    metrics = json.loads((ws / paths.REPORT_METRICS.format(study="study_b")).read_text())["models"]["mnist"]
    assert set(metrics) == {"vae_bernoulli_latent_dim2", "vae_bernoulli_latent_dim4", *HIERARCHICAL}
    for m, d in (("vae_bernoulli_latent_dim2", 2), ("vae_bernoulli_latent_dim4", 4)):
        rec = json.loads((ws / paths.METRICS.format(study="study_b", dataset="mnist", model=m, seed=0)).read_text())
        assert rec["latent_dim"] == d and "latent_rate_per_layer_nats" not in rec
    _check_hierarchical(ws, "study_b")
    assert (ws / paths.REPORT_FIGURES.format(study="study_b") / "mnist_sweeps.png").is_file()
    html = (ws / paths.REPORT_HTML.format(study="study_b")).read_text()
    assert "Metrics against the swept setting" in html


def _check_hierarchical(ws: Path, study: str) -> None:
    """The hierarchical models' records: finite bounds, ELBO <= L_k, and the per-layer latent analysis, whose
    rates sum to the rate and whose active units sum to the total; the report's per-layer column."""
    for m, dims in (("iwae_2layer_vae", [4, 2]), ("hvae_sigma", [392, 196])):
        rec = json.loads((ws / paths.METRICS.format(study=study, dataset="mnist", model=m, seed=0)).read_text())
        assert rec["latent_dims_per_layer"] == dims and rec["latent_dim"] == sum(dims)
        assert sum(rec["latent_rate_per_layer_nats"]) == pytest.approx(rec["latent_rate_nats"], rel=1e-6)
        assert sum(rec["active_units_per_layer"]) == rec["active_units"]
        assert rec["test_elbo_nats"] <= -rec["test_nll_iwae_nats"] + 1.0
    html = (ws / paths.REPORT_HTML.format(study=study)).read_text()
    assert "per layer, bottom first: rate (nats); active units / dims" in html


@pytest.mark.pipeline
def test_studies_coexist_in_dvc(tmp_path):
    from conftest import check_mirror

    check_mirror("mnist")
    ws = make_workspace(tmp_path / "ws", _a())
    (ws / "studies").mkdir(exist_ok=True)
    (ws / "studies" / "study_b.yaml").write_text(yaml.safe_dump(_b(), sort_keys=False))
    e = env(tmp_path, ws)
    py = str(BIN / "python")
    run([py, "-m", "vaebench", "dvc-yaml"], ws, env=e)
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        run(cmd, ws, env=e)
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], ws, env=e)
    a_files = _digests(ws, "study_a")
    run([dvc, "repro", "pipelines/study_b/dvc.yaml"], ws, env=e)
    assert (ws / paths.REPORT_METRICS.format(study="study_b")).is_file()
    _check_hierarchical(ws, "study_b")
    status = run([dvc, "status", "dvc.yaml"], ws, env=e)
    assert "up to date" in status.stdout, status.stdout[-3000:]
    again = run([dvc, "repro", "dvc.yaml"], ws, env=e)
    assert "Running stage" not in again.stdout, again.stdout[-3000:]
    assert _digests(ws, "study_a") == a_files


def test_committed_studies_are_valid_and_named_after_their_file():
    from vaebench.config import load_study

    for f in sorted((REPO / paths.STUDIES_DIR).glob("*.yaml")):
        study = load_study(f, catalogue=REPO / paths.CATALOGUE)
        assert study.name == f.stem, f"{f}: study name {study.name!r} differs from the file name"
    names = [load_study(f, catalogue=REPO / paths.CATALOGUE).name
             for f in [REPO / paths.DEFAULT_STUDY, *(REPO / paths.STUDIES_DIR).glob("*.yaml")]]
    assert len(names) == len(set(names)), names


def test_sweep_points_are_named_models_with_their_values():
    from vaebench.config import validate_study

    raw = tiny_params(models={"beta_vae": {"sweep": {"objective.beta": [0.001, 10]}}, "vae_bernoulli": {}})
    study = validate_study(raw, "s.yaml", REPO / paths.CATALOGUE)
    assert study.model_names == ["beta_vae_beta0p001", "beta_vae_beta10", "vae_bernoulli"]
    assert study.models["beta_vae_beta0p001"].objective.beta == 0.001
    assert study.models["beta_vae_beta10"].objective.beta == 10
    assert study.sweeps["beta_vae_beta10"] == ("beta_vae", {"objective.beta": 10})
    assert study.entry_name("beta_vae_beta10") == "beta_vae" and study.entry_name("vae_bernoulli") == "vae_bernoulli"
    from vaebench.config import ConfigError

    with pytest.raises(ConfigError, match="models.beta_vae.objective.bta"):
        validate_study(tiny_params(models={"beta_vae": {"sweep": {"objective.bta": [1]}}}), "s.yaml",
                       REPO / paths.CATALOGUE)


def test_shared_store_key_changes_with_settings_and_code(tmp_path, monkeypatch):
    from vaebench import shared

    k = shared.content_key("prepare", {"dataset": "mnist", "settings": {"n_validation": 10}})
    assert k == shared.content_key("prepare", {"dataset": "mnist", "settings": {"n_validation": 10}})
    assert k != shared.content_key("prepare", {"dataset": "mnist", "settings": {"n_validation": 11}})
    assert k != shared.content_key("classifier", {"dataset": "mnist", "settings": {"n_validation": 10}})
    monkeypatch.chdir(tmp_path)
    built = []
    out = {".npz": tmp_path / "a" / "x.npz"}

    def build():
        built.append(1)
        out[".npz"].parent.mkdir(parents=True, exist_ok=True)
        out[".npz"].write_bytes(b"data")

    assert shared.reuse_or_build("prepared", "mnist", k, out, build) is False
    other = {".npz": tmp_path / "b" / "x.npz"}
    assert shared.reuse_or_build("prepared", "mnist", k, other, build) is True
    assert built == [1] and other[".npz"].read_bytes() == b"data"
    assert shared.reuse_or_build("prepared", "mnist", None, out, build) is False and built == [1, 1]
