"""Stage ``prepare``: fetch (or read from a mirror), verify, split and store one dataset."""
from __future__ import annotations

import os

from vaebench import paths
from vaebench.config import Study
from vaebench.data.prepare import prepare_dataset


def run(study: Study, dataset: str, mirror: str | os.PathLike | None = None) -> dict:
    """Write ``paths.PREPARED`` for ``dataset``; ``mirror`` is an offline mirror root (None: download).
    Returns the summary of :func:`vaebench.data.prepare.prepare_dataset`."""
    study.check_cell(dataset)
    return prepare_dataset(dataset, study.config.datasets[dataset], paths.PREPARED.format(dataset=dataset),
                           mirror=mirror)
