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
    """A registered dataset: its distribution files, their sums, where they come from and how they are read.

    Attributes:
        name: the study's ``datasets`` key. config: its settings class. citation: the source paper and page.
        reader: ``reader(source, cfg: dict of settings, folder) -> Prepared``.
        mirror_subdir: its folder in a mirror (and under ``raw_dir`` when downloaded).
        files: {role: file name as distributed}. optional_files: {file: bool setting that makes it needed}.
        md5, sha256: {file: hex digest}, checked before the file is parsed (at least one per file).
        urls: {file: URL} downloaded by :func:`vaebench.data.fetch.download_files`.
        torchvision_class: downloaded by torchvision instead (MNIST).
        download_refusal: ``(mirror layout) -> message`` of a dataset never downloaded (CelebA).
        gz_optional: each file may be stored as ``<file>`` or ``<file>.gz`` (sums of the decompressed bytes).
        image_shape: (C, H, W) with the default settings; image_shape_of: ``(settings) -> (C, H, W)``.
        n_classes: None when unlabelled. classes: class names (``meta["classes"]``).
    """

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

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (the field values themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


SOURCES: dict[str, DatasetSource] = {}


def register_source(source: DatasetSource) -> DatasetSource:
    """Add ``source`` to :data:`SOURCES` and its settings class to ``vaebench.registry.DATASETS``.

    Raises:
        ValueError: another source is registered under its name.
    """
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
