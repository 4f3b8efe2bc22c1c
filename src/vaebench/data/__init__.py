"""Datasets: the registered sources (one module each), user image folders, and :func:`prepare_dataset`, which
writes one ``.npz`` per dataset; :mod:`vaebench.data.prepared` reads it back (it imports torch, so not here)."""
from vaebench.data import (mnist, fashion_mnist, frey_face, cifar10, svhn, celeba, image_folder,  # noqa: F401
                           moving_mnist, bair)  # (importing a dataset module registers it)
from vaebench.data.cifar10 import Cifar10Config
from vaebench.data.celeba import CelebAConfig
from vaebench.data.common import DataIntegrityError, DatasetDownloadError, MirrorError, Prepared
from vaebench.data.fetch import check_mirror, mirror_layout, missing_mirror_files, required_files, resolve_source
from vaebench.data.frey_face import FreyFaceConfig
from vaebench.data.idx import DatasetConfig, parse_idx
from vaebench.data.image_folder import ImageFolderConfig, ImageFolderError
from vaebench.data.mnist import MnistConfig
from vaebench.data.prepare import dataset_spec, prepare_dataset
from vaebench.data.sources import SOURCES, DatasetSource, get_source
from vaebench.data.svhn import SvhnConfig

__all__ = ["SOURCES", "CelebAConfig", "Cifar10Config", "DataIntegrityError", "DatasetConfig", "DatasetDownloadError",
           "DatasetSource", "FreyFaceConfig", "ImageFolderConfig", "ImageFolderError", "MirrorError", "MnistConfig",
           "Prepared", "SvhnConfig", "check_mirror", "dataset_spec", "get_source", "mirror_layout",
           "missing_mirror_files", "parse_idx", "prepare_dataset", "required_files", "resolve_source"]
