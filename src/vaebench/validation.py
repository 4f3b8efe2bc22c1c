"""Checks of a study that need built networks, the Inception weights or the claims file, run before any job."""
from __future__ import annotations

import os
from pathlib import Path

from vaebench import paths
from vaebench.config import ConfigError, Study, load_catalogue
from vaebench.config import load_study as load_settings


def check_image_shapes(study: Study) -> None:
    """Build every model's networks on the meta device for every dataset's image (or frame) shape; ConfigError if
    one fails, or if an image model meets a video dataset or a sequence model an image dataset."""
    import torch

    from vaebench.data import dataset_spec
    from vaebench.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS

    for dataset in study.dataset_names:
        spec = dataset_spec(dataset, study.config.datasets[dataset])
        shape, videos = tuple(spec["image_shape"]), bool(spec.get("sequence"))
        for name, m in study.models.items():
            architecture = ARCHITECTURES.build(m.architecture)
            if architecture.sequence != videos:
                raise ConfigError(
                    f"{study.source}: model '{name}' (architecture '{m.architecture.name}') models "
                    f"{'videos' if architecture.sequence else 'single images'}, but dataset '{dataset}' holds "
                    f"{'videos' if videos else 'single images'}: video datasets take the sequence architectures ("
                    f"{', '.join(a.name for a in ARCHITECTURES if a.sequence)}) only")
            try:
                with torch.device("meta"):
                    architecture.build(shape, m.latent_dim, POSTERIORS.get(m.posterior.name).head_dim(m.latent_dim),
                                       LIKELIHOODS.build(m.likelihood).out_channels)
            except ValueError as exc:
                raise ConfigError(
                    f"{study.source}: model '{name}' (architecture '{m.architecture.name}') cannot be used on dataset "
                    f"'{dataset}' (images C x H x W = {' x '.join(map(str, shape))}): {exc}") from None


def check_image_folders(study: Study) -> None:
    """Raise ConfigError naming the study file and the dataset when an image folder's ``path`` cannot be read
    (:meth:`vaebench.data.image_folder.ImageFolderConfig.path_problem`)."""
    from vaebench.data.image_folder import ImageFolderConfig

    for name in study.dataset_names:
        settings = study.config.datasets[name]
        problem = settings.path_problem() if isinstance(settings, ImageFolderConfig) else None
        if problem:
            raise ConfigError(f"{study.source}: invalid value at 'datasets.{name}.path': {settings.path!r}: {problem}")


def check_inception_weights(study: Study) -> None:
    """Check that the Inception weights a study asks for can be had; raises ConfigError naming the file."""
    from vaebench.metrics.inception import InceptionWeightsUnavailable
    from vaebench.metrics.references import study_inception_weights

    try:
        study_inception_weights(study.config.evaluate)
    except InceptionWeightsUnavailable as exc:
        raise ConfigError(f"{study.source}: evaluate.inception = {study.config.evaluate.inception!r}: {exc}") from None


def check_claims(path: str | os.PathLike, catalogue: str | os.PathLike = paths.CATALOGUE) -> None:
    """Validate the claims file, if it exists, against the catalogue; raises ConfigError naming file and key."""
    if Path(path).is_file():
        from vaebench.report.claims import load_claims

        load_claims(path, set(load_catalogue(catalogue)))


def load_study(path: str | os.PathLike = paths.DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """:func:`vaebench.config.load_study`, then :func:`check_study`. Raises FileNotFoundError (no study or
    catalogue file) or ConfigError naming the file and the key."""
    study = load_settings(path, catalogue)
    check_study(study, catalogue)
    return study


def validate_study(raw, source: str = paths.DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """:func:`vaebench.config.validate_study`, then :func:`check_study`; raises ConfigError naming file and key."""
    from vaebench.config import validate_study as validate_settings

    study = validate_settings(raw, source, catalogue)
    check_study(study, catalogue)
    return study


def check_study(study: Study, catalogue: str | os.PathLike = paths.CATALOGUE) -> None:
    """Every check of this module (the claims file beside ``catalogue``); raises ConfigError naming file and key."""
    check_image_folders(study)
    check_image_shapes(study)
    check_inception_weights(study)
    check_claims(Path(catalogue).parent / paths.CLAIMS, catalogue)
    check_published(study)


def check_published(study: Study) -> None:
    """Raise ConfigError when a published number of the study's ``source`` names a metric the report does not
    record (the keys of :mod:`vaebench.metrics.spec`)."""
    from vaebench.metrics import spec

    known = {m.key for m in spec.metrics()}
    for i, p in enumerate(study.config.source.published if study.config.source else []):
        if p.metric not in known:
            raise ConfigError(f"{study.source}: unknown metric {p.metric!r} at 'source.published.{i}.metric' "
                              f"(known: {', '.join(sorted(known))})")
