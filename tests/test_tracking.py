"""MLflow mirror of a training run, read back from a real sqlite store: the experiment's kind, params,
per-epoch metrics, the dataset input, the per-epoch image grids; and proof that tracking (grids
included) leaves training results bit-identical."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from test_train import workspace  # noqa: F401 - fixture: tiny random prepared MNIST, tiny study, cwd = tmp
from vaebench import paths
from vaebench.stages.train import run as train_cell
from vaebench.tracking import (DATASET_DIGEST_CHARS, DATASET_SHA256_TAG, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG,
                               SUPERSEDED_TAG, Tracker, file_sha256)

IMAGE_FILE = re.compile(r"images/grids~(?P<key>[\w.\- ~]+)\+step\+(?P<step>\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """Tracking on, into an MLflow sqlite store in tmp_path (artifacts under tmp_path/mlruns); a client on it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("VAEBENCH_MLFLOW", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("VAEBENCH_MLFLOW_GRID_N", raising=False)
    return MlflowClient(uri)


def no_tracking_failure(recwarn) -> bool:
    return not [w for w in recwarn if "MLflow unavailable" in str(w.message)]


def logged_images(client, run_id: str) -> dict[str, list[int]]:
    """{key: sorted steps} of the run's full-size MLflow images."""
    out: dict[str, list[int]] = {}
    for f in client.list_artifacts(run_id, "images"):
        m = IMAGE_FILE.match(f.path)
        if m:
            out.setdefault(m["key"], []).append(int(m["step"]))
    return {k: sorted(v) for k, v in out.items()}


def test_training_run_reads_back_from_sqlite(workspace, store, recwarn):  # noqa: F811
    meta = train_cell(workspace, "mnist", "vae_bernoulli", 0)
    assert no_tracking_failure(recwarn)
    client = store

    # the experiment is marked as a model-training one (MLflow 3's experiment kind tag)
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == meta["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == "mnist/vae_bernoulli/seed0"
    assert {k: run.data.tags[k] for k in ("dataset", "model", "seed", "study")} == {
        "dataset": "mnist", "model": "vae_bernoulli", "seed": "0", "study": "tiny"}
    params = run.data.params
    assert params["train.epochs"] == "2" and params["train.batch_size"] == "16"
    assert params["model_config.likelihood.name"] == "bernoulli"

    # per-epoch metrics: step = epoch, the values of the log
    for key in ("train_loss", "val_loss", "val_kl", "seconds"):
        history = client.get_metric_history(run.info.run_id, f"curves/{key}")
        assert [(m.step, m.value) for m in history] == [(row["epoch"], row[key]) for row in meta["history"]], key
    assert run.data.metrics["results/train_seconds"] == pytest.approx(meta["train_seconds"])

    # the dataset input: name, local source = the prepared file's path, digest = its SHA-256 (MLflow keeps at
    # most 36 characters of a digest; the full one is an input tag and a run tag)
    prepared = paths.PREPARED.format(study=workspace.name, dataset="mnist")
    sha = file_sha256(prepared)
    assert sha == hashlib.sha256(Path(prepared).read_bytes()).hexdigest()
    (ds_input,) = run.inputs.dataset_inputs
    ds = ds_input.dataset
    assert ds.name == "mnist"
    assert ds.source_type == "local" and json.loads(ds.source) == {"uri": prepared}
    assert ds.digest == sha[:DATASET_DIGEST_CHARS] and len(ds.digest) == 36
    assert {t.key: t.value for t in ds_input.tags} == {"mlflow.data.context": "training", "sha256": sha}
    assert run.data.tags[DATASET_SHA256_TAG] == sha

    # per-epoch grids of the 16 validation images (4 x 4; reconstructions interleave 8-bit rows with theirs), from
    # step 0 (the untrained model: the UI's image slider starts there), enlarged 5 x to at least 512 pixels wide
    assert logged_images(client, run.info.run_id) == {"samples": [0, 1, 2], "reconstructions": [0, 1, 2]}
    assert run.data.tags["mlflow.loggedImages"] == "True"
    from PIL import Image

    local = client.download_artifacts(run.info.run_id, "images")
    sizes = {}
    for f in client.list_artifacts(run.info.run_id, "images"):
        m = IMAGE_FILE.match(f.path)
        if m:
            sizes[m["key"]] = Image.open(f"{local}/{f.path.split('/', 1)[1]}").size
    assert sizes == {"samples": (5 * 122, 5 * 122), "reconstructions": (5 * 122, 5 * 242)}

    # the files of record, mirrored
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "log.csv" in artifacts
    assert [f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/model.pt"]


@pytest.mark.parametrize("model", ["vae_bernoulli", "sigma_vae"])
def test_tracking_leaves_training_bit_identical(workspace, store, monkeypatch, recwarn, model):  # noqa: F811
    """Grids are drawn from their own generator, in eval mode, without gradients: the checkpoint's weights and
    the log are the same to the bit with tracking on (grids every epoch) and off."""
    cell = paths.cell_paths(workspace.name, "mnist", model, 0)
    tracked = train_cell(workspace, "mnist", model, 0)
    assert no_tracking_failure(recwarn)
    assert logged_images(store, tracked["mlflow_run_id"]) == {"samples": [0, 1, 2], "reconstructions": [0, 1, 2]}
    weights_tracked = torch.load(cell["checkpoint"], weights_only=True)["state_dict"]

    monkeypatch.setenv("VAEBENCH_MLFLOW", "0")
    untracked = train_cell(workspace, "mnist", model, 0)
    assert untracked["mlflow_run_id"] is None
    weights = torch.load(cell["checkpoint"], weights_only=True)["state_dict"]

    assert weights.keys() == weights_tracked.keys()
    for k in weights:
        assert torch.equal(weights[k], weights_tracked[k]), k
    drop_time = [{k: v for k, v in row.items() if k != "seconds"} for row in tracked["history"]]
    assert drop_time == [{k: v for k, v in row.items() if k != "seconds"} for row in untracked["history"]]


@pytest.mark.parametrize("training", [True, False])
def test_epoch_grids_restore_mode_and_leave_global_rng_alone(workspace, training):  # noqa: F811
    from vaebench.stages.train import epoch_grids
    from vaebench.vae import build_model

    torch.manual_seed(0)
    model = build_model(workspace.cell("mnist", "sigma_vae", 0).model_config, (1, 28, 28)).train(training)
    x_u8 = torch.randint(0, 256, (9, 1, 28, 28), dtype=torch.uint8)
    x = model.preprocess_fixed(x_u8, seed=1, batch_size=9)
    rng = torch.get_rng_state()
    grids = epoch_grids(model, x_u8, x, seed=5)
    assert torch.equal(torch.get_rng_state(), rng) and model.training is training
    assert {k: tuple(g.shape) for k, g in grids.items()} == {"samples": (3, 92, 92), "reconstructions": (3, 182, 92)}
    assert all(torch.equal(g, grids[k]) for k, g in epoch_grids(model, x_u8, x, seed=5).items())  # same latents
    assert not torch.equal(epoch_grids(model, x_u8, x, seed=6)["samples"], grids["samples"])


def test_retrained_cell_marks_its_earlier_run_replaced(workspace, store, recwarn):  # noqa: F811
    first = train_cell(workspace, "mnist", "vae_bernoulli", 0)["mlflow_run_id"]
    other = train_cell(workspace, "mnist", "sigma_vae", 0)["mlflow_run_id"]
    second = train_cell(workspace, "mnist", "vae_bernoulli", 0)["mlflow_run_id"]
    assert no_tracking_failure(recwarn)
    old, new, kept = store.get_run(first), store.get_run(second), store.get_run(other)
    assert old.data.tags[SUPERSEDED_TAG] == second and old.info.run_name == "mnist/vae_bernoulli/seed0 (replaced)"
    assert SUPERSEDED_TAG not in new.data.tags and new.info.run_name == "mnist/vae_bernoulli/seed0"
    assert SUPERSEDED_TAG not in kept.data.tags and kept.info.run_name == "mnist/sigma_vae/seed0"
    third = train_cell(workspace, "mnist", "vae_bernoulli", 0)["mlflow_run_id"]
    assert store.get_run(second).data.tags[SUPERSEDED_TAG] == third
    assert store.get_run(first).data.tags[SUPERSEDED_TAG] == second        # marked once, by its own successor
    assert store.get_run(first).info.run_name == "mnist/vae_bernoulli/seed0 (replaced)"


def test_empty_experiment_is_dropped_and_restored_when_a_run_comes(workspace, store, recwarn):  # noqa: F811
    tracker = Tracker("tiny")
    exp = tracker.ensure_experiment()
    assert tracker.drop_if_empty() is True                     # a study that failed before training
    assert store.get_experiment(exp).lifecycle_stage == "deleted"
    assert tracker.drop_if_empty() is False                    # already gone
    meta = train_cell(workspace, "mnist", "vae_bernoulli", 0)  # the next attempt trains: the same experiment
    assert no_tracking_failure(recwarn)
    assert store.get_experiment(exp).lifecycle_stage == "active"
    assert store.get_run(meta["mlflow_run_id"]).info.experiment_id == exp
    assert Tracker("tiny").drop_if_empty() is False            # it holds a run: kept


def test_experiment_kind_added_to_existing_experiment_not_overridden(store):
    client = store
    old = client.create_experiment("old_study")                       # created before the tag existed
    chosen = client.create_experiment("genai_study", tags={EXPERIMENT_KIND_TAG: "genai_development"})

    assert Tracker("old_study").ensure_experiment() == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert Tracker("genai_study").ensure_experiment() == chosen         # a kind someone chose stays
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    new = Tracker("new_study").ensure_experiment()
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert Tracker("new_study", enabled=False).ensure_experiment() is None


def test_grid_failure_only_warns_and_grids_can_be_turned_off(workspace, store, monkeypatch):  # noqa: F811
    import vaebench.stages.train as train

    def broken(*args, **kwargs):
        raise RuntimeError("no grid today")

    monkeypatch.setattr(train, "epoch_grids", broken)
    with pytest.warns(RuntimeWarning, match="logging images failed.*no grid today"):
        meta = train_cell(workspace, "mnist", "vae_bernoulli", 0)
    assert len(meta["history"]) == 2 and paths.cell_paths(workspace.name, "mnist", "vae_bernoulli", 0)["checkpoint"].exists()

    monkeypatch.setenv("VAEBENCH_MLFLOW_GRID_N", "0")
    meta = train_cell(workspace, "mnist", "vae_bernoulli", 0)
    assert logged_images(store, meta["mlflow_run_id"]) == {}
    assert store.get_run(meta["mlflow_run_id"]).info.status == "FINISHED"


def test_mlflow_grid_has_the_pixels_of_the_evaluate_stages_png(tmp_path):
    """The image card of a grid and the evaluate stage's PNG of the same images are the same pixels (the card
    enlarged by a whole factor, nearest neighbour)."""
    import numpy as np
    from PIL import Image

    from vaebench.grids import grid_image, save_grid_png
    from vaebench.tracking import _grid_to_pil

    images = torch.rand(5, 1, 6, 4, generator=torch.Generator().manual_seed(0))
    save_grid_png(images, 3, tmp_path / "grid.png")
    png = np.asarray(Image.open(tmp_path / "grid.png"))
    card = np.asarray(_grid_to_pil(grid_image(images, 3), min_width=4 * png.shape[1]))
    assert card.shape == (4 * png.shape[0], 4 * png.shape[1], 3)
    assert np.array_equal(card[::4, ::4], png) and np.array_equal(card[3::4, 3::4], png)
