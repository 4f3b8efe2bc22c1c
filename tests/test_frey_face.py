"""Frey Face (an unlabelled 28x20 dataset) end to end on the real file of the offline mirror: the loader
(checksums, shape, orientation, the seeded and stored split), its failures (corrupted copy, missing mirror,
failed download, conv28 on 28x20 images), and the unlabelled path through the stages: no classifier, so the
classifier-feature FID is reported as unavailable with the reason while the likelihoods work with D = 560."""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import MIRROR, REPO, in_process_study, tiny_params
from vaebench import paths
from vaebench.config import ConfigError, validate_study
from vaebench.data import SOURCES, DataIntegrityError, DatasetDownloadError, prepare_dataset
from vaebench.data.common import seeded_split
from vaebench.data.prepared import load_prepared

FREY = MIRROR / "frey_face" / "frey_rawface.mat"
pytestmark = pytest.mark.mirror("frey_face")
# From the mirror's README (the MD5 is the one public loaders check for the official URL).
SHA256 = "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"
MD5 = "5aeb024d42b8a6091f30e5eb18c8a48d"
REASON = "frey_face has no labels: no classifier, so no classifier-feature FID"
MODELS = ["vae_bernoulli", "sigma_vae_optimal"]          # one Bernoulli, one Gaussian decoder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("frey") / "frey_face.npz"
    summary = prepare_dataset("frey_face", None, out, mirror=MIRROR)
    return out, summary, load_prepared(out)


def _ff() -> np.ndarray:
    """The raw matrix read independently of the loader: (560, 1965) uint8, one face per column."""
    from scipy.io import loadmat

    return loadmat(str(FREY))["ff"]


def test_recorded_checksums_match_the_mirror_copy():
    buf = FREY.read_bytes()
    assert hashlib.sha256(buf).hexdigest() == SHA256 == SOURCES["frey_face"].sha256["frey_rawface.mat"]
    assert hashlib.md5(buf).hexdigest() == MD5 == SOURCES["frey_face"].md5["frey_rawface.mat"]


def test_loader_shapes_split_and_orientation(prepared):
    out, summary, d = prepared
    assert sorted(p.name for p in out.parent.iterdir()) == ["frey_face.npz"]   # no temporary file left
    assert summary["counts"] == d["meta"]["counts"] == {"train": 1565, "val": 200, "test": 200}
    assert summary["image_shape"] == d["meta"]["image_shape"] == [1, 28, 20]
    assert summary["sha256"] == d["meta"]["sha256"] == {"frey_rawface.mat": SHA256}
    assert Path(d["meta"]["source"]) == (MIRROR / "frey_face").resolve()
    assert d["meta"]["labelled"] is False and d["meta"]["n_classes"] is None
    for split, n in (("train", 1565), ("val", 200), ("test", 200)):
        assert d[f"x_{split}"].shape == (n, 1, 28, 20) and d[f"x_{split}"].dtype == np.uint8
        assert d[f"y_{split}"].shape == (n,) and (d[f"y_{split}"] == -1).all()
    # the stored split: disjoint, covering all 1,965 columns, each sorted
    idx = {s: d[f"source_index_{s}"] for s in ("train", "val", "test")}
    assert all((np.diff(v) > 0).all() for v in idx.values())
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(1965))
    split = d["meta"]["split"]
    assert split["seed"] == 0 and "RandomState(0).permutation(1965)" in split["description"]
    # orientation: image j of a split is column source_index[j] of ff reshaped row-major to 28 x 20
    ff = _ff()
    assert ff.shape == (560, 1965) and ff.dtype == np.uint8
    for s in ("train", "val", "test"):
        for j in (0, 7, len(idx[s]) - 1):
            np.testing.assert_array_equal(d[f"x_{s}"][j, 0], ff[:, idx[s][j]].reshape(28, 20))
    pixels = np.concatenate([d[f"x_{s}"].ravel() for s in idx]).astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(0.6057, abs=5e-5) and pixels.std() == pytest.approx(0.1761, abs=5e-5)
    assert pixels.min() * 255 == 8 and pixels.max() * 255 == 238


def test_split_is_deterministic_per_seed(prepared, tmp_path):
    _, _, ref = prepared
    again = load_prepared(Path(prepare_dataset("frey_face", {"split_seed": 0}, tmp_path / "a.npz",
                                               mirror=MIRROR)["out_path"]))
    other = load_prepared(Path(prepare_dataset("frey_face", {"split_seed": 1, "max_test": 30}, tmp_path / "b.npz",
                                               mirror=MIRROR)["out_path"]))
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(again[f"source_index_{s}"], ref[f"source_index_{s}"])
        np.testing.assert_array_equal(again[f"x_{s}"], ref[f"x_{s}"])
    assert not np.array_equal(other["source_index_val"], ref["source_index_val"])
    assert other["meta"]["counts"] == {"train": 1565, "val": 200, "test": 30}   # max_test keeps the first 30
    np.testing.assert_array_equal(other["source_index_test"], seeded_split(1965, 200, 200, 1)["test"][:30])
    with pytest.raises(ValueError, match="no training image"):
        seeded_split(1965, 1000, 965, 0)


def test_corrupted_copy_raises_and_writes_nothing(tmp_path):
    folder = tmp_path / "mirror" / "frey_face"
    folder.mkdir(parents=True)
    raw = bytearray(FREY.read_bytes())
    raw[500_000] ^= 0x01                                  # one pixel byte changes
    (folder / "frey_rawface.mat").write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError) as err:
        prepare_dataset("frey_face", {}, tmp_path / "out" / "f.npz", mirror=folder.parent)
    msg = str(err.value)
    assert str(folder / "frey_rawface.mat") in msg and MD5 in msg and hashlib.md5(raw).hexdigest() in msg
    assert not (tmp_path / "out").exists()


def test_missing_mirror_folder_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset("frey_face", {}, tmp_path / "f.npz", mirror=tmp_path / "nowhere")
    msg = str(err.value)
    assert "'frey_face'" in msg and str(tmp_path / "nowhere" / "frey_face") in msg
    assert "<mirror>/frey_face/frey_rawface.mat" in msg


def test_failed_download_is_one_clear_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetDownloadError) as err:
        prepare_dataset("frey_face", {}, tmp_path / "f.npz", mirror=None, raw_dir=tmp_path / "raw")
    msg = str(err.value)
    for part in ("'frey_face'", "https://cs.nyu.edu/~roweis/data/frey_rawface.mat", "no route to host",
                 str(tmp_path / "raw" / "frey_face" / "frey_rawface.mat"), "<mirror>/frey_face/frey_rawface.mat",
                 "VAEBENCH_DATA_MIRROR"):
        assert part in msg, part
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "raw" / "frey_face" / "frey_rawface.mat").exists()


def _frey_params(models=MODELS, **data) -> dict:
    params = tiny_params(models=models)
    params["datasets"] = {"frey_face": data}
    # more test images and latent images than Frey's 200-image test split holds: capped, count recorded
    params["evaluate"].update({"n_images": 1000, "latent_n": 1000})
    return params


def test_study_validation():
    study = validate_study(_frey_params(), "params.yaml", REPO / "catalogue.yaml")
    assert study.dataset_names == ["frey_face"]
    assert study.cell("frey_face", MODELS[0], 0).record()["data"]["n_test"] == 200
    with pytest.raises(ConfigError, match=r"'datasets.frey_face.n_tset'"):
        validate_study(_frey_params(n_tset=5), "params.yaml", REPO / "catalogue.yaml")
    with pytest.raises(ConfigError, match=r"'datasets.frey_face'.*leaves no training image"):
        validate_study(_frey_params(n_test=1000, n_validation=965), "params.yaml", REPO / "catalogue.yaml")
    # the size-aware conv family takes 28x20; conv28 needs 28x28: the study fails before any job, naming model,
    # dataset and both sizes
    validate_study(_frey_params(models=["sigma_vae_conv"]), "params.yaml", REPO / "catalogue.yaml")
    from vaebench.validation import validate_study as validate_all

    with pytest.raises(ConfigError) as err:
        validate_all(_frey_params(models={"sigma_vae_conv": {"architecture": {"name": "conv28"}}}), "params.yaml",
                     REPO / "catalogue.yaml")
    msg = str(err.value)
    assert "sigma_vae_conv" in msg and "conv28" in msg and "frey_face" in msg and "28x28" in msg and "28x20" in msg


@pytest.fixture(scope="module")
def unlabelled_study(tmp_path_factory):
    """prepare -> classifier -> fid_reference -> train -> evaluate in-process on Frey Face for one Bernoulli and
    one Gaussian model (1 epoch), then the report."""
    from vaebench.report import build_report
    from vaebench.stages import classifier, evaluate, fid_reference, prepare, train

    tmp = tmp_path_factory.mktemp("frey_study")
    with in_process_study(tmp, _frey_params()) as study:
        prepare.run(study, "frey_face", mirror=str(MIRROR))
        cls_out = classifier.run(study, "frey_face")
        ref_out = fid_reference.run(study, "frey_face")
        metrics = {}
        for m in MODELS:
            train.run(study, "frey_face", m, 0)
            metrics[m] = evaluate.run(study, "frey_face", m, 0)
        shutil.copy2(REPO / paths.CLAIMS, tmp / paths.CLAIMS)
        report = build_report(study)
    return tmp, study, cls_out, ref_out, metrics, report


def test_unlabelled_dataset_has_no_classifier(unlabelled_study):
    import torch

    from vaebench.metrics.classifier import ClassifierUnavailable, load_classifier
    from vaebench.metrics.references import load_reference

    tmp, study, cls_out, ref_out, _, _ = unlabelled_study
    assert cls_out == {"available": False, "reason": REASON}
    assert json.loads((tmp / paths.CLASSIFIER_METRICS.format(study=study.name, dataset="frey_face")).read_text()) == cls_out
    pt = tmp / paths.CLASSIFIER.format(study=study.name, dataset="frey_face")
    assert torch.load(pt, weights_only=True) == cls_out
    with pytest.raises(ClassifierUnavailable, match="no labels"):
        load_classifier(pt)
    assert ref_out["available"] is False and ref_out["reason"] == REASON
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        assert load_reference(study.name, "frey_face") == {"available": False, "reason": REASON}
    assert (tmp / paths.FID_INCEPTION_REFERENCE.format(study=study.name, dataset="frey_face")).is_file()


@pytest.mark.parametrize("model", MODELS)
def test_unlabelled_metrics(unlabelled_study, model):
    tmp, study, _, _, metrics, _ = unlabelled_study
    m = metrics[model]
    cell = {k: tmp / v for k, v in paths.cell_paths(study.name, "frey_face", model, 0).items()}
    assert m == json.loads(cell["metrics"].read_text())
    # capped at the test split, the same images for both models
    assert m["n_images"] == 200 and m["latent_n"] == 200
    with np.load(cell["per_image"]) as z:
        assert np.array_equal(z["index"], np.arange(200))
    for key in ("test_elbo_nats", "test_nll_iwae_nats", "test_kl_nats", "bits_per_dim", "lk_gap_nats"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    D = 28 * 20
    offset = {"binarised": 0.0, "dequantised": math.log(256.0)}[m["data_space"]]
    assert m["bits_per_dim"] == pytest.approx((m["test_nll_iwae_nats"] + D * offset) / (D * math.log(2)), rel=1e-12)
    assert m["test_elbo_nats"] <= -m["test_nll_iwae_nats"] + 1.0
    for key in ("fid_classifier", "fid_classifier_std", "fid_classifier_per_seed", "fid_classifier_draws",
                "fid_floor", "fid_floor_n", "classifier_test_accuracy", "classifier_feature_dim", "fid_inception"):
        assert m[key] is None, key
    assert m["fid_classifier_unavailable"] == REASON and m["fid_reference"] == f"unavailable: {REASON}"
    assert cell["samples_png"].is_file()


def test_report_shows_the_fid_as_unavailable(unlabelled_study):
    tmp, study, _, _, _, report = unlabelled_study
    assert report["n_cells"] == len(MODELS)
    metrics = json.loads((tmp / paths.REPORT_METRICS.format(study=study.name)).read_text())
    assert metrics["flags"]["classifier_accuracy_low"] == []
    assert [e["unavailable"] for e in metrics["flags"]["fid_floor"]] == [REASON]
    assert "fid_classifier" not in metrics["models"]["frey_face"][MODELS[0]]
    assert "bits_per_dim" in metrics["models"]["frey_face"][MODELS[0]]
    md = (tmp / paths.REPORT_MD.format(study=study.name)).read_text()
    fid = md[md.index("### FID"):]
    fid = fid[: fid.index("### ", 4)]
    for m in MODELS:
        row = next(ln for ln in fid.splitlines() if ln.startswith(f"| {m} "))
        assert f"unavailable: {REASON}" in row, row
        assert not re.search(r"\|\s*0(\.0+)?\s*\|", row), row        # never a made-up 0
    assert f"FID classifier: unavailable: {REASON}." in md and f"FID floor: unavailable: {REASON}." in md
    assert f"FID (frey_face): classifier-feature FID unavailable: {REASON}." in md
