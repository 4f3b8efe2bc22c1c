"""A small CNN classifier trained on the dataset, whose penultimate activations are FID features; images
(B, C, H, W) are uint8 0..255 or float in [0, 1]. An unlabelled dataset gets an "unavailable" marker instead."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vaebench.atomic import atomic_path
from vaebench.data.prepared import iterate_minibatches, to_device_uint8
from vaebench.config.stages import ClassifierConfig
from vaebench.seeds import generator, stream_seed


class ClassifierUnavailable(Exception):
    """The dataset has no FID classifier (e.g. it has no labels); ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def unavailable_reason(data: dict) -> str | None:
    """Why no classifier can be trained on a prepared dataset (it is unlabelled), or None when one can."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    name = meta.get("dataset", "this dataset")
    if meta.get("labelled", True) is False or not (len(data["y_train"]) and int(data["y_train"].max()) >= 0):
        return f"{name} has no labels: no classifier, so no classifier-feature FID"
    return None


class SmallCNN(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool; 32, 64 channels), Linear(feature_dim), ReLU, Linear(n_classes),
    for images (C, image_size, image_size), image_size >= 4."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        self.kwargs = dict(in_channels=in_channels, image_size=image_size, n_classes=n_classes,
                           feature_dim=feature_dim)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        side = image_size // 2 // 2
        self.fc1 = nn.Linear(64 * side * side, feature_dim)
        self.fc2 = nn.Linear(feature_dim, n_classes)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 -> float32 [0,1]; floating input is assumed to be in [0,1] already."""
        expected = (self.kwargs["in_channels"], self.kwargs["image_size"], self.kwargs["image_size"])
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"SmallCNN expects images (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x.float() / 255.0
        if not x.is_floating_point():
            raise TypeError(f"SmallCNN expects uint8 or floating images, got {x.dtype}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (after ReLU): (B, C, H, W) images -> (B, feature_dim) float32."""
        x = self._scale(x)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, C, H, W) images -> (B, n_classes) float32."""
        return self.fc2(self.features(x))


@torch.no_grad()
def accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of correct argmax predictions of ``model`` on images ``x`` (uint8) with labels ``y``."""
    model.eval()
    correct = 0
    for idx in iterate_minibatches(len(x), batch_size, shuffle=False, device=x.device):
        correct += (model(x[idx]).argmax(1) == y[idx]).sum().item()
    return correct / max(len(x), 1)


def train_classifier(data: dict, cfg: ClassifierConfig, device: str | torch.device) -> tuple[SmallCNN, dict]:
    """Train a SmallCNN on a prepared dataset with Adam (cosine schedule) and cross-entropy, seeded. Returns
    (model in eval mode, {test_accuracy, val_accuracy (NaN if no val split), epochs, train_seconds}).
    Raises ValueError for non-square images."""
    _, c, h, w = data["x_train"].shape
    if h != w:
        raise ValueError(f"SmallCNN needs square images, got {h}x{w}")
    n_classes = int(data["meta"].get("n_classes", 0)) if isinstance(data.get("meta"), dict) else 0
    n_classes = max(n_classes, int(data["y_train"].max()) + 1)

    torch.manual_seed(stream_seed(cfg.seed, "classifier_init"))
    model = SmallCNN(c, h, n_classes=n_classes, feature_dim=cfg.feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = to_device_uint8(data["x_train"], device)
    y = torch.as_tensor(data["y_train"], dtype=torch.long, device=device)
    gen = generator(cfg.seed, "classifier_order")

    steps_per_epoch = -(-len(x) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        for idx in iterate_minibatches(len(x), cfg.batch_size, gen, device=device):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0

    def split_acc(split: str) -> float:
        if len(data[f"x_{split}"]) == 0:
            return float("nan")
        return accuracy(model, to_device_uint8(data[f"x_{split}"], device),
                        torch.as_tensor(data[f"y_{split}"], dtype=torch.long, device=device))

    model.eval()
    metrics = {"test_accuracy": split_acc("test"), "val_accuracy": split_acc("val"),
               "epochs": cfg.epochs, "train_seconds": float(train_seconds)}
    return model, metrics


def save_classifier(path: str | os.PathLike, model: SmallCNN, metrics: dict) -> None:
    """Atomically ``torch.save`` ``{state_dict, kwargs, metrics}`` (plain values, weights_only-loadable)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"state_dict": state, "kwargs": dict(model.kwargs), "metrics": dict(metrics)}, f)


def unavailable_record(reason: str) -> dict:
    """The classifier record of a dataset without a classifier: {"available": False, "reason": reason}."""
    return {"available": False, "reason": reason}


def save_unavailable(path: str | os.PathLike, reason: str) -> None:
    """Atomically ``torch.save`` the marker :func:`unavailable_record` to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(unavailable_record(reason), f)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[SmallCNN, dict]:
    """(SmallCNN in eval mode, metrics) from a ``save_classifier`` file. Raises FileNotFoundError, KeyError (an
    entry missing) or ClassifierUnavailable (the file is the :func:`save_unavailable` marker)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if ckpt.get("available", True) is False:
        raise ClassifierUnavailable(str(ckpt.get("reason", "no classifier")))
    for key in ("state_dict", "kwargs", "metrics"):
        if key not in ckpt:
            raise KeyError(f"{path}: checkpoint has no {key!r} entry")
    model = SmallCNN(**ckpt["kwargs"]).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt["metrics"]
