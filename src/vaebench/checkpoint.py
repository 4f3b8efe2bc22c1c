"""Model checkpoints, shared by the stages that train and evaluate models."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from vaebench.atomic import atomic_path
from vaebench.errors import StageError, one_line, rerun_hint

# What every checkpoint of the train stage holds besides the weights, and the cell fields naming its model.
REQUIRED = ("state_dict", "cell", "image_shape")
CELL_KEYS = ("dataset", "model", "seed", "model_config")


class CheckpointError(StageError):
    """A checkpoint is damaged or not a train-stage checkpoint; the message names the file and the job to rerun."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of another cell, a stale model_config, or weights that do not fit its model."""


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    """Atomically write ``{"state_dict": CPU weights, **meta}`` with CRC-32 records; ``meta`` holds plain values."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)
    try:
        with atomic_path(path) as tmp:
            torch.save({"state_dict": state, **meta}, tmp)
    finally:
        torch.serialization.set_crc32_options(crc)


def _cell_name(cell: Any) -> str:
    """``dataset/model/seed<n>`` of a (possibly partial) cell record."""
    if not isinstance(cell, dict):
        return repr(cell)
    return "/".join(str(cell.get(k, "?")) if k != "seed" else f"seed{cell.get(k, '?')}"
                    for k in ("dataset", "model", "seed"))


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    """The leaves where two plain nested values differ, as ``key: expected X, found Y``."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for k in list(expected) + [k for k in found if k not in expected]:
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in found:
                out.append(f"{key}: expected {expected[k]!r}, found none")
            elif k not in expected:
                out.append(f"{key}: expected none, found {found[k]!r}")
            else:
                out += _differences(expected[k], found[k], key)
        return out
    return [] if expected == found else [f"{prefix or 'value'}: expected {expected!r}, found {found!r}"]


def _normalised_model_config(cfg: Any) -> dict:
    """A model config as the plain dict ``Cell.record()`` stores, defaults filled in, without ``description``.
    Raises ConfigError for an invalid config."""
    from vaebench.config import ModelConfig, validate_model

    model = cfg if isinstance(cfg, ModelConfig) else validate_model(cfg)
    out = model.model_dump(mode="json", by_alias=True)
    out.pop("description", None)
    return out


def check_recorded_cell(path: Path, found: dict, expect: dict) -> None:
    """Raise CheckpointMismatchError unless the checkpoint's cell record ``found`` agrees with ``expect`` (a
    ``Cell.record()`` or a subset of its keys) on every key it gives; ``model_config`` as the current code reads it."""
    from vaebench.config import ConfigError

    expected_name, found_name = _cell_name(expect), _cell_name(found)
    hint = rerun_hint("train", path)
    names = [k for k in ("dataset", "model", "seed") if k in expect]
    if any(found.get(k) != expect[k] for k in names):
        raise CheckpointMismatchError(
            f"{path}: checkpoint of another model: expected {expected_name}, found {found_name}; {hint}")
    diffs = []
    for key in expect:
        if key in names:
            continue
        if key == "model_config":
            want = _normalised_model_config(expect[key])
            try:
                got = _normalised_model_config(found.get(key))
            except ConfigError as exc:
                raise CheckpointMismatchError(
                    f"{path}: stale checkpoint: the model_config it records for {found_name} is no valid model "
                    f"config any more ({str(exc).splitlines()[0]}), expected the study's current model_config of "
                    f"{expected_name}; {hint}") from None
            diffs += _differences(want, got, "model_config")
        else:
            diffs += _differences(expect[key], found.get(key), key)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        what = "model_config" if all(d.startswith("model_config") for d in diffs) else "recorded cell"
        raise CheckpointMismatchError(
            f"{path}: stale checkpoint of {found_name}: its {what} differs from the study's current one for "
            f"{expected_name} ({shown}); {hint}")


def _check_weights(path: Path, model: torch.nn.Module, state: dict, found_name: str) -> None:
    """Raise CheckpointMismatchError unless ``state`` has exactly the keys and shapes of ``model.state_dict()``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else None  # noqa: E731
    shapes = [f"{k} {shape(state[k])} vs {shape(own[k])}" for k in own
              if k in state and shape(state[k]) != shape(own[k])]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatch (checkpoint vs model)", shapes)):
            if items:
                parts.append(f"{label} {', '.join(items[:3])}" + (f" and {len(items) - 3} more" if len(items) > 3 else ""))
        raise CheckpointMismatchError(
            f"{path}: its weights do not fit the model {found_name} it records ({'; '.join(parts)}); "
            f"{rerun_hint('train', path)}")


def _check_archive(path: Path, hint: str) -> None:
    """Raise CheckpointError unless ``path`` is a zip archive whose every record matches its CRC-32."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a checkpoint archive ({path.stat().st_size} bytes, no zip directory "
                              f"found): the file is truncated or corrupted; {hint}")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: damaged checkpoint archive ({one_line(exc)}): the file is corrupted; "
                              f"{hint}") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: its record {bad.split('/', 1)[-1]!r} fails its CRC-32 "
                              f"check: the file is corrupted; {hint}")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    expect: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on ``device``, meta) of a train-stage checkpoint; with ``expect``, the recorded cell must
    agree (:func:`check_recorded_cell`).

    Raises:
        FileNotFoundError: no file. CheckpointError: unreadable, not a train-stage checkpoint, or its model cannot
            be built. CheckpointMismatchError: another cell's or stale, or weights that do not fit.
    """
    from vaebench.config import ConfigError
    from vaebench.vae import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    hint = rerun_hint("train", path)
    _check_archive(path, hint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable checkpoint ({one_line(exc)}): the file is truncated or "
                              f"corrupted; {hint}") from None
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    cell = ckpt.get("cell") if isinstance(ckpt, dict) else None
    if not missing:
        missing = [k for k, ok in (("state_dict", isinstance(ckpt["state_dict"], dict)),
                                   ("cell", isinstance(cell, dict)),
                                   ("cell.model_config", isinstance(cell, dict)
                                    and isinstance(cell.get("model_config"), dict))) if not ok][:1]
    if missing:
        what = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"a dict without {', '.join(missing)}"
        raise CheckpointError(f"{path}: not a checkpoint of the train stage ({what}; it holds {', '.join(REQUIRED)}"
                              f"); {hint}")
    if expect is not None:
        check_recorded_cell(path, cell, expect)
    found_name = _cell_name(cell)
    try:
        model = build_model(cell["model_config"], tuple(ckpt["image_shape"]))
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: the model {found_name} it records cannot be built by this code "
                              f"({one_line(exc)}); {hint}") from None
    state = ckpt.pop("state_dict")
    _check_weights(path, model, state, found_name)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointMismatchError(f"{path}: its weights do not load into the model {found_name} it records "
                                      f"({one_line(exc)}); {hint}") from None
    return model.to(device).eval(), ckpt
