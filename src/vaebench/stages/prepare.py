"""Stage ``prepare``: fetch (or read from a mirror), verify, split and store one dataset."""
from __future__ import annotations

import os

from pathlib import Path

from vaebench import paths
from vaebench.config import Study
from vaebench.data import SOURCES, prepare_dataset
from vaebench.shared import content_key, reuse_or_build


def run(study: Study, dataset: str, mirror: str | os.PathLike | None = None) -> dict:
    """Write ``paths.PREPARED`` for ``dataset`` from ``mirror`` (None: download); nothing on error. A registered
    dataset prepared with the same settings and code by any study is copied from the shared store
    (:mod:`vaebench.shared`); an image folder, whose files may change, is always read. Returns the summary of
    :func:`vaebench.data.prepare_dataset` (``{"dataset", "out_path", "shared": True}`` when copied).

    Raises:
        vaebench.config.ConfigError: ``dataset`` is not in the study.
        vaebench.data.MirrorError: (a FileNotFoundError) a mirror folder or file is missing.
        vaebench.data.DataIntegrityError: a raw file is truncated or corrupted.
        vaebench.data.DatasetDownloadError: the download failed, or the dataset is not downloadable.
    """
    study.check_cell(dataset)
    settings = study.config.datasets[dataset]
    out = Path(paths.PREPARED.format(study=study.name, dataset=dataset))
    key = (content_key("prepare", {"dataset": dataset, "settings": settings.model_dump(mode="json")})
           if dataset in SOURCES else None)
    summary: dict = {}

    def build():
        summary.update(prepare_dataset(dataset, settings, out, mirror=mirror))

    if reuse_or_build("prepared", dataset, key, {".npz": out}, build):
        return {"dataset": dataset, "out_path": str(out), "shared": True}
    return summary
