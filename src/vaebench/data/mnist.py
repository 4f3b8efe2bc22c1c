"""MNIST (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): four IDX files, each ``<file>`` or ``<file>.gz``,
checked by the SHA-256 of the decompressed bytes; downloaded with torchvision."""
from __future__ import annotations

from vaebench.data.idx import IDX_FILES, DatasetConfig, image_shape, prepare_idx
from vaebench.data.sources import DatasetSource, register_source

MnistConfig = DatasetConfig

SOURCE = register_source(DatasetSource(
    name="mnist",
    config=DatasetConfig,
    reader=prepare_idx,
    citation="LeCun & Cortes, MNIST handwritten digit database, http://yann.lecun.com/exdb/mnist/",
    mirror_subdir="mnist",
    torchvision_class="MNIST",
    gz_optional=True,
    files=dict(IDX_FILES),
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    image_shape=(1, 28, 28),
    image_shape_of=image_shape,
    n_classes=10,
))
