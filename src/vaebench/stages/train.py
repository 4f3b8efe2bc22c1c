"""Stage ``train``: train one grid cell (dataset x model x seed), write its checkpoint and per-epoch log."""
from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vaebench import paths
from vaebench.atomic import atomic_path
from vaebench.checkpoint import save_checkpoint
from vaebench.data.prepared import iterate_minibatches, load_prepared
from vaebench.data.sources import SOURCES
from vaebench.device import device_name, pick_device
from vaebench.errors import StageError
from vaebench.seeds import generator, stream_seed
from vaebench.tracking import CURVES, RESULTS, Tracker, grid_n
from vaebench.vae import build_model

if TYPE_CHECKING:
    from vaebench.config import Study


GRID_LOGS = 10  # MLflow image grids per training run, at most
EVAL_FRAMES = 1000  # images (or video frames) per forward pass of the validation and test curves


class DivergenceError(StageError):
    """Training produced a non-finite loss; the message gives the step and the last finite loss."""


class ResumeIgnoredWarning(UserWarning):
    """A resume file was found but not used (other params, code, device or an unreadable file)."""


RESUME_FORMAT = 1  # bump when the resume file's layout changes: older files are then ignored


def code_sha256(model_config) -> str:
    """SHA-256 (hex) over the train stage's source files for a model of ``model_config`` (a ModelConfig; its
    components only, :func:`vaebench.dag.source_paths`): paths and contents."""
    from vaebench.dag import components, source_paths
    from vaebench.sources import PACKAGE_DIR

    h = hashlib.sha256()
    for f in source_paths("train", components([model_config])):
        h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def resume_key(record: dict, model_config, device: torch.device) -> dict:
    """What a resume file must match to be used: format, cell, training code, device, torch version, threads."""
    return {"format": RESUME_FORMAT, "cell": record, "code_sha256": code_sha256(model_config), "device": str(device),
            "torch": str(torch.__version__), "threads": torch.get_num_threads()}


def save_resume(path: Path, key: dict, model, opt: torch.optim.Optimizer, generators: dict[str, torch.Generator],
                progress: dict) -> None:
    """Atomically write a training job's resume file (read by ``torch.load(path, weights_only=True)``): ``key``,
    CPU copies of the model's and optimiser's state dicts, every RNG state (``generators`` too) and ``progress``."""
    rng = {"torch": torch.get_rng_state(), **{name: g.get_state() for name, g in generators.items()}}
    if torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"key": key, "progress": progress, "rng": rng,
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume(path: Path, key: dict) -> dict | None:
    """The resume file at ``path`` if it exists and was written under ``key`` (:func:`resume_key`), else None;
    an unreadable or mismatching file is ignored with a :class:`ResumeIgnoredWarning` saying what differs."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = state["key"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is ignored, not fatal
        warnings.warn(f"ignoring resume file {path}: unreadable ({type(exc).__name__}: {exc}); "
                      "training starts from epoch 1", ResumeIgnoredWarning, stacklevel=2)
        return None
    if found != key:
        differs = sorted(k for k in set(key) | set(found) if key.get(k) != found.get(k))
        if "cell" in differs:
            cell_diff = sorted(k for k in set(key["cell"]) | set(found["cell"] or {})
                               if key["cell"].get(k) != (found["cell"] or {}).get(k))
            differs[differs.index("cell")] = f"cell ({', '.join(cell_diff)})"
        warnings.warn(f"ignoring resume file {path}: written with different {', '.join(differs)}; "
                      "training starts from epoch 1", ResumeIgnoredWarning, stacklevel=2)
        return None
    return state


def train_epoch(model, opt: torch.optim.Optimizer, x_train: torch.Tensor, batch_size: int,
                batch_gen: torch.Generator, data_gen: torch.Generator, desc: str = "") -> tuple[dict, torch.Tensor]:
    """One pass of optimiser steps over the training split, with no host synchronisation inside the loop.

    Args:
        x_train: (N, C, H, W) uint8 on the training device. batch_size: images per step (last batch partial).
        batch_gen: CPU generator of the minibatch order. data_gen: generator of the preprocessing noise.
    Returns:
        (sums, losses): {log name: 0-dim float64 device tensor}, batch-size-weighted sums of the objective's
        batch logs; (steps,) float64 device tensor of step losses (checked by :func:`check_finite`).
    """
    from tqdm import tqdm

    steps = math.ceil(len(x_train) / batch_size)
    batches = iterate_minibatches(len(x_train), batch_size, batch_gen, device=x_train.device)
    losses = torch.empty(steps, dtype=torch.float64, device=x_train.device)
    sums: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(tqdm(batches, total=steps, desc=desc, disable=not sys.stderr.isatty(), leave=False)):
        xb = model.preprocess(x_train[idx], generator=data_gen)
        loss, logs = model.training_loss(xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[i] = loss.detach()
        for k, v in logs.items():
            weighted = v * len(idx)
            sums[k] = sums[k] + weighted if k in sums else weighted
    return sums, losses


def check_finite(losses: torch.Tensor, first_step: int, last_finite: float, where: str) -> float:
    """Check one epoch's step losses (steps,) with one host synchronisation; return the last of them. Raises
    DivergenceError naming the first non-finite step, its value and the last finite loss."""
    values = losses.cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        i = int(bad[0])
        before = float(values[i - 1]) if i > 0 else last_finite
        raise DivergenceError(
            f"{where}: loss became {float(values[i])} at step {first_step + i}; "
            f"last finite loss {before:.4f} nats/image at step {first_step + i - 1}")
    return float(values[-1]) if len(values) else last_finite


@torch.no_grad()
def evaluate_loss(model, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Image-weighted mean of ``model.training_loss`` logs over data-space ``x`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        _, logs = model.training_loss(xb)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(xb)
    model.train(was_training)
    return {k: v / len(x) for k, v in sums.items()}


@torch.no_grad()
def epoch_grids(model, x_u8: torch.Tensor, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The per-epoch MLflow image grids: ``samples`` (decoder means at z ~ N(0, I) seeded with ``seed``; absent
    when the model cannot sample) and ``reconstructions``; for videos one grid ``sequences``, three rows per video
    (frames 1..T-1: the true ones, the teacher-forced reconstructions, a continuation of the first n_past frames
    seeded with ``seed``, its first n_past - 1 frames the true ones). Draws from no training generator.

    Args:
        x_u8: (n, C, H, W) uint8 images, or (n, T, C, H, W) videos. x: the same in the model's data space.
    Returns:
        {name: (3, H', W') float grid in [0, 1]} (:func:`vaebench.grids.grid_image`).
    """
    from vaebench.grids import grid_image, interleave_rows
    from vaebench.vae.sampling import prior_samples

    n = len(x)
    was_training = model.training
    model.eval()
    try:
        if x.dim() == 5:
            from vaebench.metrics.video import predict_samples

            samples = torch.cat([x_u8[:, 1:model.n_past].float().cpu() / 255.0,
                                 predict_samples(model, x, 1, seed, batch_size=n)[0]], 1)
        else:
            samples = prior_samples(model, n, seed, batch_size=n)
        recons = model.reconstruct(x).float().cpu()
    finally:
        model.train(was_training)
    originals = x_u8.float().cpu() / 255.0
    if x.dim() == 5:
        nrow = x.shape[1] - 1
        rows = interleave_rows([v.flatten(0, 1) for v in (originals[:, 1:], recons, samples)], nrow)
        return {"sequences": grid_image(rows, nrow)}
    nrow = math.ceil(math.sqrt(n))
    grids = {"reconstructions": grid_image(interleave_rows([originals, recons], nrow), nrow)}
    if samples is not None:
        grids["samples"] = grid_image(samples.float().cpu(), nrow)
    return grids


def run(study: Study, dataset: str, model_name: str, seed: int) -> dict:
    """Train one cell; writes ``paths.CHECKPOINT`` and ``paths.TRAIN_LOG`` atomically, and ``paths.RESUME``
    after every epoch (deleted at the end; a rerun continues from it, :func:`load_resume`).

    Returns:
        The checkpoint's metadata (everything but the weights; ``train_seconds`` in seconds).
    Raises:
        DivergenceError: a non-finite loss, naming the epoch, step and last finite loss.
    """
    import pandas as pd

    cell = study.cell(dataset, model_name, seed)
    tcfg = cell.train
    torch.manual_seed(stream_seed(seed, "init"))
    device = pick_device(cell.device)
    out = paths.cell_paths(study.name, dataset, model_name, seed)
    tag = f"{dataset}/{model_name}/seed{seed}"

    data = load_prepared(paths.PREPARED.format(study=study.name, dataset=dataset))
    source = SOURCES.get(dataset)                           # None: a user's image folder
    epoch_split = source.train_epoch if source is not None else None   # None: the same split every epoch
    x_train = torch.from_numpy(data["x_train"]).to(device)  # uint8, (N, C, H, W); the first epoch's split
    split_epoch = 1                                         # the epoch whose split x_train holds
    x_val_u8 = torch.from_numpy(data["x_val"]).to(device)
    image_shape = tuple(x_train.shape[1:])
    model = build_model(cell.model_config, image_shape).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    x_val = model.preprocess_fixed(x_val_u8, seed=stream_seed(seed, "validation_noise"), batch_size=1000)
    x_test = (model.preprocess_fixed(torch.from_numpy(data["x_test"]).to(device),
                                     seed=stream_seed(seed, "test_curve"), batch_size=1000)
              if tcfg.test_curve else None)

    record = cell.record()
    eval_batch = max(1, EVAL_FRAMES // (x_val.shape[1] if x_val.dim() == 5 else 1))
    batch_gen = generator(seed, "minibatch_order")
    data_gen = generator(seed, "train_noise", device=str(device))
    generators = {"batch_gen": batch_gen, "data_gen": data_gen}
    key = resume_key(record, cell.model_config, device)
    resumed = load_resume(out["resume"], key)
    progress = {"epoch": 0, "step": 0, "last_finite": float("nan"), "seconds": 0.0, "history": [],
                "mlflow_run_id": None}
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        rng = resumed["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        for name, g in generators.items():
            g.set_state(rng[name])
        progress = resumed["progress"]
        print(f"[train] {tag}: resuming after epoch {progress['epoch']}/{tcfg.epochs} from {out['resume']}",
              file=sys.stderr, flush=True)
    history: list[dict] = progress["history"]

    tracker = Tracker(cell.study)
    logged = tracker.continue_run(progress["mlflow_run_id"], "seconds") if resumed is not None else None
    if logged is None:
        tracker.start_run(run_name=tag, params=record,
                          tags={"dataset": dataset, "model": model_name, "seed": str(seed), "study": cell.study},
                          supersede=("dataset", "model", "seed"))
        tracker.log_dataset(dataset, paths.PREPARED.format(study=study.name, dataset=dataset), context="training")
        logged = 0
    if resumed is not None:
        tracker.set_tag("resumed_after_epoch", str(progress["epoch"]))
    for row in history:  # epochs finished but not yet logged to the run
        if row["epoch"] > logged:
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, CURVES, step=row["epoch"])
    n_grid = min(grid_n(), len(x_val)) if tracker.active else 0
    grid_every = max(1, math.ceil(tcfg.epochs / GRID_LOGS))
    grid_seconds = 0.0  # left out of the reported training time

    def log_grids(at_epoch: int) -> None:
        nonlocal grid_seconds
        t_grid = time.perf_counter()
        tracker.log_images(lambda: epoch_grids(model, x_val_u8[:n_grid], x_val[:n_grid],
                                               seed=stream_seed(seed, "epoch_grids")), step=at_epoch)
        grid_seconds += time.perf_counter() - t_grid

    step, last_finite = progress["step"], progress["last_finite"]
    t0 = time.perf_counter() - progress["seconds"]
    try:
        if n_grid and progress["epoch"] == 0:      # the image cards' first step: the untrained model
            log_grids(0)
        for epoch in range(progress["epoch"] + 1, tcfg.epochs + 1):
            if epoch_split is not None and epoch != split_epoch:
                x_train, split_epoch = torch.from_numpy(epoch_split(data, epoch)).to(device), epoch
            model.train()
            sums, losses = train_epoch(model, opt, x_train, tcfg.batch_size, batch_gen, data_gen,
                                       desc=f"{tag} epoch {epoch}/{tcfg.epochs}")
            last_finite = check_finite(losses, step, last_finite, where=f"{tag}: epoch {epoch}")
            step += len(losses)
            n_seen = len(x_train)
            model.end_epoch()
            val = evaluate_loss(model, x_val, batch_size=eval_batch)
            seconds = time.perf_counter() - t0 - grid_seconds
            row = {"epoch": epoch, "seconds": round(seconds, 3)}
            kept = model.objective.batch_terms
            row.update({f"train_{k}": float(v) / n_seen for k, v in sums.items() if k in kept})
            row.update({f"val_{k}": v for k, v in val.items() if k in kept})
            if x_test is not None:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(stream_seed(seed, "test_curve", epoch))
                    test = evaluate_loss(model, x_test, batch_size=eval_batch)
                row.update({f"test_{k}": v for k, v in test.items() if k in kept})
            row.update(model.tracked_scalars())
            history.append(row)
            save_resume(out["resume"], key, model, opt, generators,
                        {"epoch": epoch, "step": step, "last_finite": last_finite, "seconds": seconds,
                         "history": history, "mlflow_run_id": tracker.run_id})
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, CURVES, step=epoch)
            if n_grid and (epoch % grid_every == 0 or epoch == tcfg.epochs):
                log_grids(epoch)
            if not sys.stderr.isatty():
                print(f"[train] {tag} epoch {epoch}: train loss {row.get('train_loss', float('nan')):.2f}, "
                      f"val loss {row.get('val_loss', float('nan')):.2f}", file=sys.stderr, flush=True)
    except BaseException:
        tracker.end("FAILED")
        raise
    if epoch_split is not None and split_epoch != tcfg.epochs:   # resumed after the last epoch
        x_train = torch.from_numpy(epoch_split(data, tcfg.epochs)).to(device)
    model.calibrate(x_train, tcfg.batch_size, generator(seed, "calibration"))
    train_seconds = time.perf_counter() - t0 - grid_seconds

    meta = {
        "cell": record,
        "image_shape": list(image_shape),
        "epochs": tcfg.epochs,
        "train_seconds": train_seconds,
        "device": str(device),
        "device_name": device_name(device),
        "mlflow_run_id": tracker.run_id,
        "history": history,
    }
    with atomic_path(out["train_log"]) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    save_checkpoint(out["checkpoint"], model, meta)
    tracker.log_metrics({"train_seconds": train_seconds}, RESULTS, step=tcfg.epochs)
    tracker.log_artifact(str(out["train_log"]))
    tracker.log_artifact(str(out["checkpoint"]), "checkpoint")
    tracker.end("FINISHED")
    out["resume"].unlink(missing_ok=True)
    return meta
