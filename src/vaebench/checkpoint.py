"""Model checkpoints and device choice, shared by the stages that train and evaluate models."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from vaebench.atomic import atomic_path


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` (RuntimeError without a GPU)."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but no CUDA device is available")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    """Atomically write ``{"state_dict": ..., **meta}``; ``meta`` must hold only plain values (dicts, lists,
    strings, numbers, None) so that ``torch.load(path, weights_only=True)`` reads it back."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint written by the train stage; returns ``(model in eval mode, meta)``.

    ``meta`` holds everything but the weights: ``cell`` (the resolved cell, see ``vaebench.config.Cell``),
    ``image_shape``, ``epochs``, ``train_seconds``, ``device``, ``mlflow_run_id``, ``history``.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    from vaebench.vae import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ckpt["cell"]["model_config"], tuple(ckpt["image_shape"]))
    model.load_state_dict(ckpt.pop("state_dict"))
    return model.to(device).eval(), ckpt
