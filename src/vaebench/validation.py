"""Checks of a study that need the whole picture, run once before any job (Snakemake's ``common.smk``,
``python -m vaebench validate``): every model's networks built for every dataset's image shape, the Inception
weights a study asks for, and the claims file. The top layer: it imports vae, data, metrics and report."""
from __future__ import annotations

import os
from pathlib import Path

from vaebench import paths
from vaebench.config import ConfigError, Study, load_catalogue
from vaebench.config import load_study as load_settings


def check_image_shapes(study: Study) -> None:
    """Build every model's networks on PyTorch's meta device (no memory, no compute) for every dataset's image
    shape.

    Raises:
        ConfigError: naming the model, its architecture, the dataset and the image shape C x H x W.
    """
    import torch

    from vaebench.data import dataset_spec
    from vaebench.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS

    for dataset in study.dataset_names:
        shape = tuple(dataset_spec(dataset, study.config.datasets[dataset])["image_shape"])
        for name, m in study.models.items():
            try:
                with torch.device("meta"):
                    ARCHITECTURES.build(m.architecture).build(
                        shape, m.latent_dim, POSTERIORS.get(m.posterior.name).head_dim(m.latent_dim),
                        LIKELIHOODS.build(m.likelihood).out_channels)
            except ValueError as exc:
                raise ConfigError(
                    f"{study.source}: model '{name}' (architecture '{m.architecture.name}') cannot be used on dataset "
                    f"'{dataset}' (images C x H x W = {' x '.join(map(str, shape))}): {exc}") from None


def check_inception_weights(study: Study) -> None:
    """A study that asks for Inception FID must have its weights (``inception: required`` tries the download once);
    a configured weights path must exist.

    Raises:
        ConfigError: naming the file, where to get it and where to put it.
    """
    from vaebench.metrics.inception import InceptionWeightsUnavailable
    from vaebench.metrics.references import study_inception_weights

    try:
        study_inception_weights(study.config.evaluate)
    except InceptionWeightsUnavailable as exc:
        raise ConfigError(f"{study.source}: evaluate.inception = {study.config.evaluate.inception!r}: {exc}") from None


def check_claims(path: str | os.PathLike, catalogue: str | os.PathLike = paths.CATALOGUE) -> None:
    """The claims file (``claims.yaml``), validated against the catalogue's model names when it exists.

    Raises:
        ConfigError: naming the file and the key.
    """
    if Path(path).is_file():
        from vaebench.report.claims import load_claims

        load_claims(path, set(load_catalogue(catalogue)))


def load_study(path: str | os.PathLike = paths.DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """Read and validate a study (:func:`vaebench.config.load_study`), then run every check of this module.

    Raises:
        FileNotFoundError: the study or the catalogue file does not exist.
        ConfigError: naming the file and the key.
    """
    study = load_settings(path, catalogue)
    check_study(study, catalogue)
    return study


def validate_study(raw, source: str = paths.DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """A parsed study validated (:func:`vaebench.config.validate_study`) and checked by every check of this module.

    Raises:
        ConfigError: naming the file and the key.
    """
    from vaebench.config import validate_study as validate_settings

    study = validate_settings(raw, source, catalogue)
    check_study(study, catalogue)
    return study


def check_study(study: Study, catalogue: str | os.PathLike = paths.CATALOGUE) -> None:
    """Every check of this module on a validated study (the claims file beside ``catalogue``).

    Raises:
        ConfigError: naming the file and the key.
    """
    check_image_shapes(study)
    check_inception_weights(study)
    check_claims(Path(catalogue).parent / paths.CLAIMS, catalogue)
