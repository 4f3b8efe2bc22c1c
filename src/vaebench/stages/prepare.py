"""Stage ``prepare``: fetch (or read from a mirror), verify, split and store one dataset."""
from __future__ import annotations

import os

from vaebench import paths
from vaebench.config import Study
from vaebench.data import prepare_dataset


def run(study: Study, dataset: str, mirror: str | os.PathLike | None = None) -> dict:
    """Write ``paths.PREPARED`` for ``dataset`` from ``mirror`` (None: download); nothing on error. Returns the
    summary of :func:`vaebench.data.prepare_dataset`.

    Raises:
        vaebench.config.ConfigError: ``dataset`` is not in the study.
        vaebench.data.MirrorError: (a FileNotFoundError) a mirror folder or file is missing.
        vaebench.data.DataIntegrityError: a raw file is truncated or corrupted.
        vaebench.data.DatasetDownloadError: the download failed, or the dataset is not downloadable.
    """
    study.check_cell(dataset)
    return prepare_dataset(dataset, study.config.datasets[dataset], paths.PREPARED.format(dataset=dataset),
                           mirror=mirror)
