"""The table of registered dataset sources: one :class:`DatasetSource` per dataset module."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from vaebench import registry
from vaebench.data.common import Prepared
from vaebench.registry import StrictConfig


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: settings class, ``reader(source, settings dict, folder) -> Prepared``, files as
    distributed ({role: name}; ``optional_files``: {name: bool setting needing it}), their MD5 / SHA-256, where
    they come from (mirror folder, ``urls``, ``torchvision_class``, or ``download_refusal(layout) -> message``),
    ``gz_optional`` (``<file>`` or ``<file>.gz``, sums of the decompressed bytes), default (C, H, W) and
    ``image_shape_of(settings)``, ``n_classes`` (None: unlabelled), ``classes`` (names); ``sequence``: it holds
    videos, each split (N, T, C, H, W) with ``image_shape`` the frame shape; ``train_epoch(prepared arrays, epoch)``:
    the training split of a (1-based) epoch when it is drawn anew each epoch (None: ``x_train`` every epoch)."""

    name: str
    config: type[StrictConfig]
    reader: Callable[[DatasetSource, dict, Path], Prepared]
    citation: str
    mirror_subdir: str
    files: dict[str, str]
    image_shape: tuple[int, int, int]
    n_classes: int | None
    md5: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    optional_files: dict[str, str] = field(default_factory=dict)
    torchvision_class: str | None = None
    download_refusal: Callable[[str], str] | None = None
    gz_optional: bool = False
    image_shape_of: Callable[[Any], tuple[int, int, int]] | None = None
    classes: tuple[str, ...] | None = None
    sequence: bool = False
    train_epoch: Callable[[dict, int], Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (the field values themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


SOURCES: dict[str, DatasetSource] = {}


def register_source(source: DatasetSource) -> DatasetSource:
    """Add ``source`` to :data:`SOURCES` and ``vaebench.registry.DATASETS``; ValueError if its name is taken."""
    if SOURCES.get(source.name, source) is not source:
        raise ValueError(f"dataset {source.name!r} is registered twice")
    registry.DATASETS.register(source.name, source.config)
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> DatasetSource:
    """The source registered as ``name``; KeyError lists the known names."""
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]
