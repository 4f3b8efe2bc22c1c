"""Prepared datasets on disk and on the device: load the ``.npz`` written by the prepare stage, keep a
split on the device as uint8 and draw minibatches by index (no per-sample Python transforms anywhere).

File contract (written by :func:`vaebench.data.prepare.prepare_dataset`)::

    x_train, x_val, x_test   uint8   (N, C, H, W)   pixel values 0..255 (MNIST (1, 28, 28), Frey Face (1, 28, 20))
    y_train, y_val, y_test   int64   (N,)           class labels; -1 for an unlabelled dataset (Frey Face)
    meta                     str     JSON: dataset, source, split, sha256 per file, counts, image_shape,
                                     n_classes (null when unlabelled), labelled (false when unlabelled)
    source_index_*           int64   (N,)           (Frey Face) each image's column in the original file

Files written before ``labelled`` was recorded are labelled datasets (MNIST): ``meta.get("labelled", True)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


def load_prepared(path: str | os.PathLike) -> dict:
    """Load a file written by ``prepare_dataset``.

    Returns:
        dict with ``x_train, x_val, x_test`` (uint8 (N,C,H,W)), ``y_*`` (int64 (N,)), any further arrays
        of the file (e.g. ``source_index_*``) as numpy arrays and ``meta`` (the parsed JSON dict).
    Raises:
        FileNotFoundError: ``path`` missing. KeyError: an expected array is absent (names it and the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "meta") if k not in z]
        if missing:
            raise KeyError(f"{path}: missing array(s) {missing}")
        data = {k: z[k] for k in z.files if k != "meta"}
        data["meta"] = json.loads(str(z["meta"]))
    return data


# -----------------------------------------------------------------------------
# Device-resident data

def to_device_uint8(x: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """Copy a uint8 image array (N,C,H,W) to ``device`` as a uint8 tensor (no scaling: 0..255).

    Raises:
        TypeError: ``x`` is not uint8 (scaling belongs to the model, not to data loading).
    """
    if x.dtype != np.uint8:
        raise TypeError(f"to_device_uint8 expects a uint8 array, got {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def iterate_minibatches(n: int, batch_size: int, generator: torch.Generator | None = None,
                        shuffle: bool = True, device: str | torch.device | None = None) -> Iterator[torch.Tensor]:
    """Yield int64 index tensors covering ``range(n)`` once, ``batch_size`` at a time (last batch partial).

    With ``shuffle`` the order is ``torch.randperm(n, generator=generator)`` drawn on the generator's
    device (use a CPU generator for the same order on every machine); without it, 0..n-1 in order.
    ``device`` moves the indices (e.g. to the device holding the data); default: where they were drawn.

    Raises:
        ValueError: ``batch_size`` < 1 or ``n`` < 0.
    """
    if batch_size < 1 or n < 0:
        raise ValueError(f"iterate_minibatches: need batch_size >= 1 and n >= 0, got {batch_size=}, {n=}")
    if shuffle:
        gen_device = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=gen_device)
    else:
        order = torch.arange(n)
    if device is not None:
        order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
