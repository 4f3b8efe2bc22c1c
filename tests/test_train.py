"""Training-loop behaviour that the maths tests cannot see: divergence handling and checkpoints."""
from __future__ import annotations


import pytest
import torch

from conftest import REPO, tiny_params, write_random_prepared
from vaebench import paths
from vaebench.checkpoint import load_checkpoint
from vaebench.config import validate_study
from vaebench.stages.train import DivergenceError
from vaebench.stages.train import run as train_cell


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """A prepared dataset of random uint8 'images' in tmp_path, the tiny study, MLflow off."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEBENCH_MLFLOW", "0")
    write_random_prepared(tmp_path, n_train=64)
    params = tiny_params(models=["vae_bernoulli", "sigma_vae", "info_vae"])
    params["train"].update(epochs=2, batch_size=16)
    return validate_study(params, catalogue=REPO / paths.CATALOGUE)


def test_checkpoint_roundtrip_weights_only(workspace):
    meta = train_cell(workspace, "mnist", "sigma_vae", 0)
    cell = paths.cell_paths(workspace.name, "mnist", "sigma_vae", 0)
    ckpt = torch.load(cell["checkpoint"], weights_only=True)
    assert ckpt["cell"]["model_config"]["likelihood"]["name"] == "gaussian_learned_shared"
    assert len(ckpt["history"]) == 2 and "log_sigma" in ckpt["history"][-1]
    model, _ = load_checkpoint(cell["checkpoint"])
    assert not model.training
    log = cell["train_log"].read_text().splitlines()
    assert log[0].startswith("epoch,seconds,train_loss") and len(log) == 3
    assert meta["mlflow_run_id"] is None


def test_objective_specific_terms_reach_the_log(workspace):
    """An objective's own batch terms (InfoVAE's MMD) are logged per epoch with no edit of the train loop."""
    train_cell(workspace, "mnist", "info_vae", 0)
    header = paths.cell_paths(workspace.name, "mnist", "info_vae", 0)["train_log"].read_text().splitlines()[0].split(",")
    assert {"train_mmd", "val_mmd", "train_kl", "val_elbo"} <= set(header)


def test_divergence_stops_with_step_and_last_finite_loss(workspace, monkeypatch):
    from vaebench.vae.model import VAE

    original = VAE.training_loss
    calls = {"n": 0}

    def poisoned(self, x):
        loss, logs = original(self, x)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 4 else loss), logs

    monkeypatch.setattr(VAE, "training_loss", poisoned)
    with pytest.raises(DivergenceError) as err:
        train_cell(workspace, "mnist", "vae_bernoulli", 0)
    msg = str(err.value)
    assert "step 3" in msg and "last finite loss" in msg and "vae_bernoulli" in msg
    # nothing that looks finished
    cell = paths.cell_paths(workspace.name, "mnist", "vae_bernoulli", 0)
    assert not cell["checkpoint"].exists() and not cell["train_log"].exists()
