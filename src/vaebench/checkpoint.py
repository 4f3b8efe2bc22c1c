"""Model checkpoints, shared by the stages that train and evaluate models."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from vaebench.atomic import atomic_path


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    """Atomically write ``{"state_dict": ..., **meta}``; ``meta`` must hold only plain values (dicts, lists,
    strings, numbers, None) so that ``torch.load(path, weights_only=True)`` reads it back. The weights are saved
    as CPU copies whatever device the model is on, so a checkpoint from a GPU loads on a machine without one."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)


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
