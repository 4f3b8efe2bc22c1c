"""SmallCNN feature classifier trained on a real MNIST subset from the offline mirror."""

import numpy as np
import pytest
import torch

from conftest import MIRROR
from vaebench.data import prepare_dataset
from vaebench.data.prepared import load_prepared
from vaebench.metrics.classifier import ClassifierConfig, SmallCNN, load_classifier, save_classifier, train_classifier

pytestmark = pytest.mark.mirror("mnist")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    prepare_dataset("mnist", {"max_train": 5000, "max_validation": 500, "max_test": 1000}, out, mirror=MIRROR)
    return load_prepared(out)


@pytest.fixture(scope="module")
def trained(small_data):
    # 200 Adam steps (5000 images, batch 50, 2 epochs)
    return train_classifier(small_data, ClassifierConfig(epochs=2, batch_size=50, lr=2e-3, seed=0), "cpu")


def test_trains_to_high_accuracy(trained):
    model, metrics = trained
    assert set(metrics) == {"test_accuracy", "val_accuracy", "epochs", "train_seconds"}
    assert metrics["test_accuracy"] >= 0.9, metrics
    assert metrics["val_accuracy"] >= 0.85, metrics
    assert metrics["epochs"] == 2 and metrics["train_seconds"] > 0
    assert not model.training


def test_input_convention_uint8_equals_float(small_data, trained):
    model, _ = trained
    x = torch.from_numpy(small_data["x_test"][:16])
    with torch.no_grad():
        f_u8 = model.features(x)
        f_float = model.features(x.float() / 255)
    assert f_u8.shape == (16, 128) and f_u8.dtype == torch.float32
    torch.testing.assert_close(f_u8, f_float)
    assert model(x).shape == (16, 10)
    with pytest.raises(ValueError, match="28"):
        model.features(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_save_load_roundtrip(tmp_path, small_data, trained):
    model, metrics = trained
    path = tmp_path / "clf" / "classifier.pt"
    save_classifier(path, model, metrics)
    assert sorted(p.name for p in path.parent.iterdir()) == ["classifier.pt"]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["kwargs"] == {"in_channels": 1, "image_size": 28, "n_classes": 10, "feature_dim": 128}
    loaded, loaded_metrics = load_classifier(path, "cpu")
    assert loaded_metrics == metrics
    x = torch.from_numpy(small_data["x_test"][:64])
    with torch.no_grad():
        assert torch.equal(model.features(x), loaded.features(x))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_classifier(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="kwargs"):
        load_classifier(tmp_path / "bad.pt")


def test_unknown_config_key(small_data):
    with pytest.raises(ValueError, match="epoch"):
        ClassifierConfig(epoch=1)


def test_deterministic_given_seed(small_data):
    tiny = {k: (v[:300] if isinstance(v, np.ndarray) else v) for k, v in small_data.items()}
    cfg = ClassifierConfig(epochs=1, batch_size=100, feature_dim=16, seed=3)
    a, _ = train_classifier(tiny, cfg, "cpu")
    b, _ = train_classifier(tiny, cfg, "cpu")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert isinstance(a, SmallCNN)
