"""Prepared datasets: load the ``.npz`` of :func:`vaebench.data.prepare_dataset` (file contract: ``docs/data.md``),
keep a split on the device as uint8 and draw minibatches by index."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vaebench.errors import StageError, one_line, rerun_hint

REQUIRED = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "meta")
SPLITS = ("train", "val", "test")


class PreparedDataError(StageError):
    """A prepared ``.npz`` is damaged or breaks the file contract; the message names the file, what is wrong and
    the prepare job that rewrites it."""


def _bad(path: Path, what: str) -> PreparedDataError:
    return PreparedDataError(f"{path}: {what}; {rerun_hint('prepare', path)}")


def load_prepared(path: str | os.PathLike) -> dict:
    """The arrays of a prepared file (``x_*`` uint8 (N, C, H, W), or (N, T, C, H, W) when ``meta["sequence"]``,
    ``y_*`` int64 (N,), any others) and ``meta``
    (the parsed JSON dict), checked against the file contract.

    Raises:
        FileNotFoundError: ``path`` missing. PreparedDataError: not a readable npz, a damaged member, an array
            missing or of another dtype or shape, ``meta`` not a JSON object agreeing with the arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared dataset not found: {path}")
    if not zipfile.is_zipfile(path):
        raise _bad(path, f"not an .npz archive ({path.stat().st_size} bytes, no zip directory found): the file is "
                         "truncated or corrupted")
    data: dict = {}
    try:
        z = np.load(path, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise BadZipFile, ValueError, OSError, EOFError, ...
        raise _bad(path, f"not a readable .npz archive ({one_line(exc)}): the file is truncated or corrupted") from None
    with z:
        missing = [k for k in REQUIRED if k not in z.files]
        if missing:
            raise _bad(path, f"missing array(s) {', '.join(missing)} (a prepared dataset holds "
                             f"{', '.join(REQUIRED)})")
        for key in z.files:
            try:
                data[key] = z[key]
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - BadZipFile (CRC), zlib.error, ValueError (header), EOFError
                raise _bad(path, f"array {key!r} is damaged ({one_line(exc)}): the file is corrupted") from None
    meta = data.pop("meta")
    try:
        data["meta"] = json.loads(str(meta)) if meta.ndim == 0 and meta.dtype.kind == "U" else None
    except ValueError as exc:
        raise _bad(path, f"'meta' is not valid JSON ({one_line(exc)})") from None
    if not isinstance(data["meta"], dict):
        raise _bad(path, f"'meta' should be a JSON object in a 0-d string array, got {meta.dtype} of shape "
                         f"{meta.shape}")
    _check_contract(path, data)
    return data


def _describe(a: np.ndarray) -> str:
    return f"{a.dtype} of shape {tuple(a.shape)}"


def _check_contract(path: Path, data: dict) -> None:
    sequence = data["meta"].get("sequence") is True
    ndim, layout = (5, "(N, T, C, H, W)") if sequence else (4, "(N, C, H, W)")
    image_shape = None
    for split in SPLITS:
        x = data[f"x_{split}"]
        if x.dtype != np.uint8 or x.ndim != ndim:
            raise _bad(path, f"array 'x_{split}' is {_describe(x)}, expected uint8 of shape {layout}"
                             + (" ('meta' records sequences)" if sequence else ""))
        if image_shape is None:
            image_shape = x.shape[-3:]
        elif x.shape[-3:] != image_shape:
            raise _bad(path, f"array 'x_{split}' has {'frames' if sequence else 'images'} of shape "
                             f"{tuple(x.shape[-3:])}, but 'x_train' has {tuple(image_shape)}")
        for name in (f"y_{split}", f"source_index_{split}"):
            a = data.get(name)
            if a is not None and (a.dtype != np.int64 or a.shape != (len(x),)):
                raise _bad(path, f"array {name!r} is {_describe(a)}, expected int64 of shape ({len(x)},) (one "
                                 f"per {'sequence' if sequence else 'image'} of 'x_{split}')")
    meta = data["meta"]
    if isinstance(meta.get("image_shape"), list) and meta["image_shape"] != list(image_shape):
        raise _bad(path, f"'meta' records image_shape {meta['image_shape']}, the arrays hold {list(image_shape)}")
    counts = {split: len(data[f"x_{split}"]) for split in SPLITS}
    if isinstance(meta.get("counts"), dict) and meta["counts"] != counts:
        raise _bad(path, f"'meta' records counts {meta['counts']}, the arrays hold {counts}")


def to_device_uint8(x: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """``x`` uint8 (N, C, H, W) as a uint8 tensor on ``device`` (0..255); TypeError if ``x`` is not uint8."""
    if x.dtype != np.uint8:
        raise TypeError(f"to_device_uint8 expects a uint8 array, got {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def iterate_minibatches(n: int, batch_size: int, generator: torch.Generator | None = None,
                        shuffle: bool = True, device: str | torch.device | None = None) -> Iterator[torch.Tensor]:
    """int64 index tensors covering ``range(n)`` once, ``batch_size`` at a time (the last partial): shuffled by
    ``torch.randperm(n, generator=generator)`` on the generator's device, or in order; moved to ``device`` if given.

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
