"""Config validation: the schema, the grid cross-checks, and errors that name the bad key."""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import BIN, REPO, env, make_workspace, run, tiny_params
from vaebench.config import ConfigError, cells, load_params, resolve_cell, validate_params


@pytest.fixture()
def params():
    with open(REPO / "params.yaml") as f:
        return yaml.safe_load(f)


def test_default_study_is_valid_and_fills_defaults(params):
    p = validate_params(params)
    assert p["evaluate"]["iwae_chunk"] >= 1
    assert len(cells(p)) == len(p["grid"]["models"]) * len(p["grid"]["seeds"])
    cell = resolve_cell(p, "mnist", "beta_vae", 0)
    assert cell["model_cfg"]["objective"]["beta"] == params["models"]["beta_vae"]["objective"]["beta"]
    assert cell["train"]["epochs"] == params["train"]["epochs"]


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda p: p["train"].update(epochz=3), "epochz"),
        (lambda p: p["grid"]["models"].append("no_such_model"), "no_such_model"),
        (lambda p: p["grid"]["datasets"].append("imagenet"), "grid.datasets.1"),
        (lambda p: p["train"].update(lr=-1.0), "train.lr"),
        (lambda p: p["models"]["beta_vae"]["objective"].update(beta=-0.5), "models.beta_vae.objective.beta"),
        (lambda p: p["models"]["vae_bernoulli"].update(latent_dim=0), "models.vae_bernoulli.latent_dim"),
        (lambda p: p["models"]["vae_gaussian"]["likelihood"].pop("sigma"), "models.vae_gaussian.likelihood"),
        (lambda p: p["evaluate"].update(iwae_k=0), "evaluate.iwae_k"),
    ],
)
def test_bad_params_name_the_key(params, mutate, key):
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        validate_params(bad, source="bad.yaml")
    assert key in str(err.value) and "bad.yaml" in str(err.value)


def test_nonsense_combinations_are_rejected(params):
    bad = copy.deepcopy(params)
    bad["models"]["vae_categorical"]["objective"] = {"name": "geco", "constraint": "sse", "kappa": 4.0}
    with pytest.raises(ConfigError, match="models.vae_categorical.objective"):
        validate_params(bad)
    bad = copy.deepcopy(params)
    bad["models"]["vae_bernoulli"]["likelihood"]["sigma"] = "learned_shared"
    with pytest.raises(ConfigError, match="models.vae_bernoulli.likelihood"):
        validate_params(bad)
    bad = copy.deepcopy(params)
    bad["models"]["iwae"]["objective"]["beta"] = 2.0
    with pytest.raises(ConfigError, match="models.iwae.objective"):
        validate_params(bad)


def test_yaml_syntax_error_names_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_params(f)


def test_bad_params_stop_both_engines_before_any_job(tmp_path, mirror):
    """A bad study stops the CLI (exit 2) and Snakemake before anything is written."""
    p = tiny_params()
    p["models"]["vae_bernoulli"]["latent_dim"] = -3
    ws = make_workspace(tmp_path / "ws", p)
    cli = run([str(BIN / "python"), "-m", "vaebench", "prepare", "--dataset", "mnist"], ws, check=False, env=env(tmp_path))
    assert cli.returncode == 2
    assert "models.vae_bernoulli.latent_dim" in cli.stderr
    smk = run([str(BIN / "snakemake"), "--cores", "1"], ws, check=False, env=env(tmp_path))
    assert smk.returncode != 0
    assert "models.vae_bernoulli.latent_dim" in smk.stdout + smk.stderr
    assert not (ws / "data").exists() or not any((ws / "data").rglob("*.*"))
    assert not (tmp_path / "mlflow.db").exists()
