"""Preparing a dataset: read its source, split it and write one ``.npz`` (the file contract: ``docs/data.md``)."""
from __future__ import annotations

import json
import os

import numpy as np

from vaebench.atomic import atomic_path
from vaebench.data.common import Prepared
from vaebench.data.fetch import missing_mirror_files, resolve_source
from vaebench.data.image_folder import ImageFolderConfig, prepare_image_folder
from vaebench.data.sources import SOURCES
from vaebench.registry import StrictConfig


def _settings(config: type[StrictConfig], cfg: StrictConfig | dict | None) -> StrictConfig:
    if isinstance(cfg, config):
        return cfg
    return config.model_validate(cfg.model_dump() if isinstance(cfg, StrictConfig) else cfg or {})


def dataset_spec(name: str, cfg: StrictConfig | dict | None = None) -> dict:
    """A dict with at least ``image_shape`` (C, H, W) for dataset ``name`` with settings ``cfg`` (None: defaults):
    a registered dataset's :class:`~vaebench.data.sources.DatasetSource` fields, or for another name with ``kind:
    image_folder`` ``{"format": "image_folder", "image_shape", "config", "settings"}``.

    Raises:
        KeyError: an unregistered name without ``kind: image_folder``. pydantic.ValidationError: invalid settings.
    """
    if name in SOURCES:
        source = SOURCES[name]
        spec = source.as_dict()
        if cfg is not None and source.image_shape_of is not None:
            spec["image_shape"] = tuple(source.image_shape_of(_settings(source.config, cfg)))
        return spec
    kind = cfg.get("kind") if isinstance(cfg, dict) else getattr(cfg, "kind", None)
    if kind != "image_folder":
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(SOURCES)} (or a folder of your own images: "
                       "kind: image_folder)")
    settings = _settings(ImageFolderConfig, cfg)
    return {"format": "image_folder", "image_shape": (settings.channels, *settings.size_hw),
            "config": ImageFolderConfig, "settings": settings}


def prepare_dataset(name: str, cfg: StrictConfig | dict | None, out_path: str | os.PathLike,
                    mirror: str | os.PathLike | None = None, raw_dir: str | os.PathLike = "data/raw") -> dict:
    """Fetch, verify, split and write dataset ``name`` as one ``.npz`` (atomically; nothing on error).

    ``name``: a registered dataset, or another name whose settings ``cfg`` (dict or object; None: defaults) have
    ``kind: image_folder``. ``mirror``: an offline mirror root; None downloads into ``raw_dir``. Returns {"dataset",
    "out_path", "source", "counts": {train, val, test}, "image_shape": [C, H, W], "sha256": {file: digest}}.

    Raises:
        KeyError: unknown dataset. ValueError: an invalid setting or a split too large. MirrorError,
        DatasetDownloadError, DataIntegrityError, ImageFolderError: see :mod:`vaebench.data.fetch` and the readers.
    """
    if name not in SOURCES:
        settings = dataset_spec(name, cfg)["settings"]
        parts, where = prepare_image_folder(settings)
        classes = parts.more_meta.get("classes")
        return _write_prepared(name, out_path, parts, where, len(classes) if classes else None,
                               settings.model_dump(mode="json"))
    source = SOURCES[name]
    settings = _settings(source.config, cfg)
    cfg = settings.model_dump(mode="json")
    folder, where = resolve_source(source, mirror, raw_dir, settings)
    if mirror is not None:
        missing = missing_mirror_files(source, folder, settings)
        if missing is not None:
            raise missing
    try:
        parts = source.reader(source, cfg, folder)
    except FileNotFoundError:
        missing = missing_mirror_files(source, folder, settings) if mirror is not None else None
        if missing is None:
            raise
        raise missing from None
    return _write_prepared(name, out_path, parts, where, source.n_classes, cfg)


def _write_prepared(name: str, out_path: str | os.PathLike, parts: Prepared, source: str, n_classes: int | None,
                    cfg: dict) -> dict:
    """Write ``parts`` as the ``.npz`` atomically; returns prepare_dataset's summary."""
    out = {}
    for split, (x, y) in parts.splits.items():
        out[f"x_{split}"] = np.ascontiguousarray(x[:, None] if x.ndim == 3 else x, dtype=np.uint8)
        out[f"y_{split}"] = y.astype(np.int64)
    out.update(parts.extra)
    counts = {split: int(len(out[f"y_{split}"])) for split in parts.splits}
    image_shape = list(out["x_train"].shape[-3:])
    sequence = out["x_train"].ndim == 5
    labelled = n_classes is not None
    meta = {
        "dataset": name,
        "source": source,
        "sha256": parts.sums,
        "counts": counts,
        "image_shape": image_shape,
        "n_classes": n_classes,
        "labelled": labelled,
        "dtype": (f"uint8 (0..255), layout {'N,T,C,H,W' if sequence else 'N,C,H,W'}; labels int64"
                  + ("" if labelled else " (-1: unlabelled)")),
        "sequence": sequence,
        "split": parts.split_meta,
        "config": cfg,
        **parts.more_meta,
    }
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out, meta=np.array(json.dumps(meta, sort_keys=True)))
    return {"dataset": name, "out_path": str(out_path), "source": source, "counts": counts,
            "image_shape": image_shape, "sha256": parts.sums}
