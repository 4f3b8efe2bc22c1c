"""Stage ``prepare``: fetch (or read from a mirror), verify, split and store one dataset."""
from __future__ import annotations

import os

from vaebench import paths
from vaebench.config import Study
from vaebench.data import prepare_dataset


def run(study: Study, dataset: str, mirror: str | os.PathLike | None = None) -> dict:
    """Write ``paths.PREPARED`` for ``dataset``; ``mirror`` is an offline mirror root (None: download).
    Returns the summary of :func:`vaebench.data.prepare_dataset`.

    Raises:
        vaebench.config.ConfigError: ``dataset`` is not in the study.
        vaebench.data.MirrorError: (a FileNotFoundError) the mirror root, its folder for the dataset or
            one of its files is missing; the message names it and shows the mirror layout expected.
        vaebench.data.DataIntegrityError: a raw file is truncated or corrupted (checksum mismatch, bad
            gzip, IDX, MATLAB, pickle, tar or zip data, an image of the wrong size); the message names the file.
        vaebench.data.DatasetDownloadError: without a mirror, the download failed (nothing is left behind),
            or the dataset is not downloadable (CelebA: the message says where to get the files).
        On every error nothing is written: no partial file, and an earlier ``paths.PREPARED`` stays as it was.
    """
    study.check_cell(dataset)
    return prepare_dataset(dataset, study.config.datasets[dataset], paths.PREPARED.format(dataset=dataset),
                           mirror=mirror)
