"""Train one grid cell (dataset x model x seed) and write its checkpoint and per-epoch log.

Protocol (stated again in the report): Adam with the study's learning rate, epochs and batch size;
the whole prepared dataset lives on the training device as uint8 and minibatches are drawn by index
(no per-sample Python transforms); each batch is mapped into the model's data space by
``model.preprocess`` (dynamic binarisation for Bernoulli decoders, uniform dequantisation
(x + u)/256 for Gaussian ones, integer intensities for categorical ones) with a seeded generator.
Validation uses the last ``n_validation`` official training images, preprocessed once with a fixed
seed so epochs are comparable. CUDA is used when available (``train.device: auto``).
"""
from __future__ import annotations

import math
import sys
import time

import torch

from vaebench import paths
from vaebench.config import resolve_cell
from vaebench.data import iterate_minibatches, load_prepared
from vaebench.io import atomic_path
from vaebench.tracking import Tracker
from vaebench.vae import build_model
from vaebench.errors import StageError


class DivergenceError(StageError):
    """Training produced a non-finite loss; the message gives the step and the last finite loss."""


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU raises RuntimeError."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _preprocess_fixed(model, x_uint8: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """Preprocess a whole split once with a fixed seed (validation/test sets stay the same)."""
    gen = torch.Generator(device=x_uint8.device).manual_seed(seed)
    return torch.cat([model.preprocess(x_uint8[i : i + batch_size], generator=gen) for i in range(0, len(x_uint8), batch_size)])


@torch.no_grad()
def evaluate_loss(model, x: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Image-weighted mean of ``model.training_loss`` logs over ``x`` (model in eval mode)."""
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


def train_cell(params: dict, dataset: str, model_name: str, seed: int, threads: int | None = None) -> dict:
    """Train one cell; writes ``paths.CHECKPOINT`` and ``paths.TRAIN_LOG`` atomically.

    The checkpoint is a dict loadable with ``torch.load(path, weights_only=True)``:
    ``state_dict``, ``cell`` (the resolved cell config), ``image_shape``, ``epochs``,
    ``train_seconds``, ``device``, ``mlflow_run_id`` and ``history`` (the per-epoch log rows).

    Returns:
        The checkpoint's metadata (everything but the weights).
    Raises:
        DivergenceError: a non-finite loss, naming the epoch, step and last finite loss.
    """
    import pandas as pd
    from tqdm import tqdm

    cell = resolve_cell(params, dataset, model_name, seed)
    tcfg = cell["train"]
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = pick_device(tcfg["device"])
    out = paths.cell_paths(dataset, model_name, seed)

    data = load_prepared(paths.PREPARED.format(dataset=dataset))
    x_train = torch.from_numpy(data["x_train"]).to(device)  # uint8, (N, C, H, W)
    x_val_u8 = torch.from_numpy(data["x_val"]).to(device)
    image_shape = tuple(x_train.shape[1:])
    model = build_model(cell["model_cfg"], image_shape).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg["lr"])
    x_val = _preprocess_fixed(model, x_val_u8, seed=10_000 + seed, batch_size=1000)

    tracker = Tracker(cell["study"])
    tracker.start_run(
        run_name=f"{dataset}/{model_name}/seed{seed}",
        tags={"dataset": dataset, "model": model_name, "seed": str(seed), "study": cell["study"]},
        params=cell,
    )

    batch_gen = torch.Generator().manual_seed(seed)  # CPU: minibatch order
    data_gen = torch.Generator(device=device).manual_seed(seed + 1)  # binarisation / dequantisation noise
    history: list[dict] = []
    step, last_finite = 0, float("nan")
    t0 = time.perf_counter()
    try:
        for epoch in range(1, tcfg["epochs"] + 1):
            model.train()
            sums: dict[str, float] = {}
            n_seen = 0
            batches = iterate_minibatches(len(x_train), tcfg["batch_size"], batch_gen, shuffle=True)
            bar = tqdm(
                batches,
                total=math.ceil(len(x_train) / tcfg["batch_size"]),
                desc=f"{dataset}/{model_name}/seed{seed} epoch {epoch}/{tcfg['epochs']}",
                disable=not sys.stderr.isatty(),
                leave=False,
            )
            for idx in bar:
                xb = model.preprocess(x_train[idx.to(device)], generator=data_gen)
                loss, logs = model.training_loss(xb)
                if not torch.isfinite(loss):
                    raise DivergenceError(
                        f"{dataset}/{model_name}/seed{seed}: loss became {loss.item()} at epoch {epoch}, "
                        f"step {step}; last finite loss {last_finite:.4f} nats/image at step {step - 1}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last_finite = loss.item()
                step += 1
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                n_seen += len(idx)
                bar.set_postfix(loss=f"{last_finite:.2f}")
            model.end_epoch()
            val = evaluate_loss(model, x_val, batch_size=1000)
            row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 3)}
            row.update({f"train_{k}": v / n_seen for k, v in sums.items() if k in ("loss", "elbo", "recon", "kl")})
            row.update({f"val_{k}": v for k, v in val.items() if k in ("loss", "elbo", "recon", "kl")})
            row.update(model.tracked_scalars())
            history.append(row)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if not sys.stderr.isatty():
                print(f"[train] {dataset}/{model_name}/seed{seed} epoch {epoch}: "
                      f"train loss {row.get('train_loss', float('nan')):.2f}, val loss {row.get('val_loss', float('nan')):.2f}",
                      file=sys.stderr, flush=True)
    except BaseException:
        tracker.end("FAILED")
        raise
    train_seconds = time.perf_counter() - t0

    meta = {
        "cell": cell,
        "image_shape": list(image_shape),
        "epochs": tcfg["epochs"],
        "train_seconds": train_seconds,
        "device": str(device),
        "mlflow_run_id": tracker.run_id,
        "history": history,
    }
    with atomic_path(out["train_log"]) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    with atomic_path(out["checkpoint"]) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)
    tracker.log_metrics({"train_seconds": train_seconds}, step=tcfg["epochs"])
    tracker.log_artifact(str(out["train_log"]))
    tracker.log_artifact(str(out["checkpoint"]), "checkpoint")
    tracker.end("FINISHED")
    return meta


def load_checkpoint(path, device="cpu"):
    """Rebuild the model of a checkpoint written by :func:`train_cell`; returns ``(model, meta)``."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ckpt["cell"]["model_cfg"], tuple(ckpt["image_shape"]))
    model.load_state_dict(ckpt.pop("state_dict"))
    return model.to(device).eval(), ckpt
