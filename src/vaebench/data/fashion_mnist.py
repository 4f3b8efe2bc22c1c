"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747): MNIST's four IDX files, gzipped, checked by the official MD5s of the
``.gz`` files."""
from __future__ import annotations

from vaebench.data.idx import IDX_FILES, DatasetConfig, image_shape, prepare_idx
from vaebench.data.sources import DatasetSource, register_source

HOST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {role: f"{name}.gz" for role, name in IDX_FILES.items()}

SOURCE = register_source(DatasetSource(
    name="fashion_mnist",
    config=DatasetConfig,
    reader=prepare_idx,
    citation=('Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine '
              'Learning Algorithms", arXiv:1708.07747; ' + HOST),
    mirror_subdir="fashion_mnist",
    files=dict(FILES),
    urls={f: HOST + f for f in FILES.values()},
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    image_shape=(1, 28, 28),
    image_shape_of=image_shape,
    n_classes=10,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
))
