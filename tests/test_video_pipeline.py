"""Stochastic Moving MNIST as a dataset source and SVG-LP through the train and evaluate stages, in-process, on
real MNIST digits from the mirror: the prepared file's contract and determinism, the splits' disjoint digits, a
study pairing video datasets with image models refused before any job, and an end-to-end tiny cell whose record
holds the likelihood columns and the best-of-N SSIM/PSNR (checked against the saved per-frame arrays and
against torchmetrics on the same frames)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import REPO, in_process_study, tiny_params

SETTINGS = {"n_train": 24, "n_validation": 8, "n_test": 6, "sequence_length": 6, "test_sequence_length": 8}
NETS = {"name": "svg_dcgan64", "filters": 4, "g_dim": 8, "rnn_size": 16, "n_past": 3}


def video_params(models=("svg_sigma_learned", "svg_sigma_optimal")) -> dict:
    params = tiny_params(models={m: {"latent_dim": 3, "architecture": NETS} for m in models})
    params["datasets"] = {"moving_mnist": dict(SETTINGS)}
    params["train"].update({"epochs": 2, "batch_size": 8})
    params["evaluate"].update({"n_images": 6, "iwae_k": 10, "video_samples": 3, "grid_n": 6, "batch_size": 64,
                               "inception": "off"})
    return params


def test_prepared_videos_are_deterministic_and_follow_the_contract(tmp_path, mirror):
    from vaebench.data import prepare_dataset
    from vaebench.data.prepared import PreparedDataError, load_prepared

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (a, b):
        prepare_dataset("moving_mnist", SETTINGS, path, mirror=mirror)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    data = load_prepared(a)
    assert data["x_train"].shape == (24, 6, 1, 64, 64) and data["x_test"].shape == (6, 8, 1, 64, 64)
    assert data["meta"]["sequence"] is True and data["meta"]["image_shape"] == [1, 64, 64]
    assert data["meta"]["sequence_lengths"] == {"train": 6, "val": 6, "test": 8}
    assert (data["y_train"] == -1).all() and data["x_train"].max() == 255
    ranges = data["meta"]["split"]["digit_ranges"]
    assert ranges["train"] == [0, 50000] and ranges["val"] == [50000, 60000]
    assert data["digit_index_val"].max() < 10000                      # indices into the held-out digits
    # the contract: a sequence file with image-shaped arrays is refused, naming the array
    arrays = {k: v for k, v in data.items() if k != "meta"}
    arrays["x_val"] = arrays["x_val"][:, 0]
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps(data["meta"])), **arrays)
    with pytest.raises(PreparedDataError, match=r"'x_val' is uint8 of shape \(8, 1, 64, 64\), expected uint8 of "
                                                r"shape \(N, T, C, H, W\)"):
        load_prepared(bad)


def test_fresh_training_sequences_each_epoch_continue_the_training_stream(tmp_path, mirror, one_thread,
                                                                           monkeypatch):
    """fresh_train: epoch 1 is x_train, epoch e the next n_train sequences of the same stream, so epochs 1 and 2
    of a 6-sequence file are the 12 sequences of a file generated once with n_train 12; the train stage builds each
    later epoch's split once (epoch 1's is the prepared x_train) and calibrates on the last one."""
    import dataclasses

    from vaebench.data import prepare_dataset
    from vaebench.data.moving_mnist import train_epoch
    from vaebench.data.prepared import load_prepared
    from vaebench.data.sources import SOURCES
    from vaebench.stages import prepare, train

    settings = {**SETTINGS, "n_train": 6}
    prepare_dataset("moving_mnist", {**settings, "fresh_train": True}, tmp_path / "fresh.npz", mirror=mirror)
    prepare_dataset("moving_mnist", {**settings, "n_train": 12}, tmp_path / "once.npz", mirror=mirror)
    fresh, once = load_prepared(tmp_path / "fresh.npz"), load_prepared(tmp_path / "once.npz")
    assert fresh["digits_train"].shape == (50000, 32, 32) and "digits_train" not in once
    assert "a fresh set of 6 training sequences every epoch" in fresh["meta"]["split"]["description"]
    np.testing.assert_array_equal(train_epoch(fresh, 1), once["x_train"][:6])
    np.testing.assert_array_equal(train_epoch(fresh, 2), once["x_train"][6:])
    assert train_epoch(once, 2) is once["x_train"]
    with pytest.raises(ValueError, match="epoch must be >= 1"):
        train_epoch(fresh, 0)

    asked = []
    source = SOURCES["moving_mnist"]

    def spy(data, epoch):
        asked.append(epoch)
        return train_epoch(data, epoch)

    monkeypatch.setitem(SOURCES, "moving_mnist", dataclasses.replace(source, train_epoch=spy))
    params = video_params(models=("svg_sigma_learned",))
    params["datasets"]["moving_mnist"].update(settings, fresh_train=True)
    (tmp_path / "run").mkdir()
    with in_process_study(tmp_path / "run", params) as study:
        prepare.run(study, "moving_mnist", mirror=mirror)
        train.run(study, "moving_mnist", "svg_sigma_learned", 0)
    assert asked == [2]                       # built once: epoch 2 trains on it, then the calibration


def test_image_models_and_video_datasets_do_not_mix():
    from vaebench.config import ConfigError
    from vaebench.validation import validate_study

    params = video_params()
    params["models"]["vae_bernoulli"] = {}
    with pytest.raises(ConfigError, match="model 'vae_bernoulli' .* models single images, but dataset "
                                          "'moving_mnist' holds videos"):
        validate_study(params, "v.yaml", REPO / "catalogue.yaml")
    params = tiny_params(models={"svg_sigma_learned": {}})
    with pytest.raises(ConfigError, match="model 'svg_sigma_learned' .* models videos, but dataset 'mnist' holds "
                                          "single images"):
        validate_study(params, "v.yaml", REPO / "catalogue.yaml")


def test_svg_trains_and_evaluates_on_real_moving_mnist(tmp_path, mirror, one_thread, monkeypatch):
    from torchmetrics.functional.image import structural_similarity_index_measure

    from vaebench import paths
    from vaebench.stages import classifier, evaluate, fid_reference, prepare, train

    monkeypatch.setenv("VAEBENCH_DATA_MIRROR", str(mirror))
    with in_process_study(tmp_path, video_params()) as study:
        prepare.run(study, "moving_mnist", mirror=mirror)
        classifier.run(study, "moving_mnist")
        fid_reference.run(study, "moving_mnist")
        for model in study.model_names:
            meta = train.run(study, "moving_mnist", model, 0)
            assert meta["image_shape"] == [6, 1, 64, 64] and len(meta["history"]) == 2
            m = evaluate.run(study, "moving_mnist", model, 0)
            assert m["n_images"] == 6 and m["scored_frames"] == 7 and m["predicted_frames"] == 5
            assert m["n_past"] == 3 and m["video_samples"] == 3
            assert m["test_elbo_per_frame_nats"] == pytest.approx(m["test_elbo_nats"] / 7)
            assert m["test_nll_iwae_nats"] <= -m["test_elbo_nats"] + 1e-6 + 4 * m["test_nll_iwae_se"]
            assert len(m["ssim_best_per_frame"]) == 5 and 0 < m["ssim_sample"] <= m["ssim_best"] <= 1
            assert m["ssim_best_sample"] <= m["ssim_best"] and m["psnr_sample"] <= m["psnr_best"]
            assert m["latent_rate_nats"] == pytest.approx(m["test_kl_nats"], rel=1e-4) and m["latent_n"] == 6
            assert len(m["latent_rate_per_frame_nats"]) == 7 and 0 <= m["active_units"] <= 3
            assert sum(m["latent_rate_per_frame_nats"]) == pytest.approx(m["latent_rate_nats"], rel=1e-6)
            assert m["latent_mutual_info_nats"] is None and m["latent_marginal_kl_nats"] is None
            cell = paths.cell_paths(study.name, "moving_mnist", model, 0)
            arrays = np.load(cell["per_image"])
            assert np.allclose(arrays["ssim_best"].mean(), m["ssim_best"]) and arrays["ssim_best"].shape == (6,)
            assert arrays["elbo"].shape == (6,) and cell["samples_png"].stat().st_size > 0
        # the report: the video table and per-frame figure instead of the latent and FID sections, one GIF of all models
        import shutil

        from PIL import Image

        from vaebench.report import build_report, figures

        shutil.copy(REPO / "claims.yaml", "claims.yaml")
        built = build_report(study)
        text = open(built["index_md"]).read()
        assert "### Video prediction (best of N continuations)" in text and "### Latent analysis" not in text
        assert "SSIM, best of N [mean" in text and "moving_mnist_video_scores.png" in text
        assert "rate: KL to the learned prior (nats/sequence)" in text
        assert "active units against the learned prior / latent_dim" in text
        gif = Image.open(f"reports/{study.name}/figures/moving_mnist_continuations_seed0.gif")
        columns = 1 + len(study.model_names)                           # the true frames, then each model's best
        shown = figures.VIDEO_SEQUENCES_SHOWN                           # one line per shown test sequence
        assert gif.n_frames == 7 and gif.size == (columns * 66 + 2, shown * 66 + 2)   # 7 frames
        with Image.open(f"reports/{study.name}/figures/moving_mnist_samples_by_model.png") as still:
            assert still.mode == "L"                                   # grey frames, stored losslessly as grey
        # the SSIM of a frame against itself and against a blank frame, through the same torchmetrics call
        from vaebench.metrics.video import best_of_n, frame_scores

        data = np.load(paths.PREPARED.format(study=study.name, dataset="moving_mnist"))
        truth = torch.from_numpy(data["x_test"][:2, 3:]).float() / 255.0
        blank = torch.zeros_like(truth)
        scores = frame_scores(torch.stack([truth, blank]), truth)
        assert torch.allclose(scores["ssim"][0], torch.ones(2, 5, dtype=torch.float64), atol=1e-4)
        assert (scores["psnr"][0] == 100.0).all()
        ref = structural_similarity_index_measure(blank.flatten(0, 1), truth.flatten(0, 1), gaussian_kernel=False,
                                                  kernel_size=7, data_range=1.0, reduction="none")
        assert torch.allclose(scores["ssim"][1].flatten().float(), ref, atol=1e-6)
        mse = truth.pow(2).mean((-3, -2, -1)).double()
        assert torch.allclose(scores["psnr"][1], 10 * torch.log10(1 / mse), rtol=1e-5)
        best = best_of_n(scores)
        assert (best["best_sample"] == 0).all() and torch.equal(best["ssim_max"],
                                                                  scores["ssim"][0])


def _video_workspace(root):
    from conftest import check_mirror, make_workspace

    check_mirror("mnist")
    params = video_params()
    params["study"] = "video"
    return make_workspace(root / "ws", params)


def _check_video_report(ws):
    from vaebench import paths

    metrics = json.loads((ws / paths.REPORT_METRICS.format(study="video")).read_text())["models"]["moving_mnist"]
    assert set(metrics) == {"svg_sigma_learned", "svg_sigma_optimal"}
    html = (ws / paths.REPORT_HTML.format(study="video")).read_text()
    assert "Video prediction (best of N continuations)" in html and "data:image/gif;base64," in html
    rec = json.loads((ws / paths.METRICS.format(study="video", dataset="moving_mnist", model="svg_sigma_learned",
                                                seed=0)).read_text())
    assert rec["scored_frames"] == 7 and len(rec["psnr_best_per_frame"]) == 5


@pytest.mark.pipeline
def test_video_study_runs_in_snakemake(tmp_path):
    from conftest import BIN, env, run

    ws = _video_workspace(tmp_path)
    e = env(tmp_path, ws)
    run([str(BIN / "snakemake"), "--cores", "2"], ws, env=e)
    _check_video_report(ws)
    dry = run([str(BIN / "snakemake"), "--cores", "2", "-n"], ws, env=e)
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.pipeline
def test_video_study_runs_in_dvc(tmp_path):
    from conftest import BIN, env, run

    ws = _video_workspace(tmp_path)
    e = env(tmp_path, ws)
    run([str(BIN / "python"), "-m", "vaebench", "dvc-yaml"], ws, env=e)
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        run(cmd, ws, env=e)
    run([str(BIN / "dvc"), "repro"], ws, env=e)
    _check_video_report(ws)
    status = run([str(BIN / "dvc"), "status", "dvc.yaml"], ws, env=e)
    assert "up to date" in status.stdout, status.stdout[-3000:]


def test_frame_fid_is_the_inception_fid_of_predicted_frames_against_every_test_frame(tmp_path, mirror, one_thread,
                                                                                     monkeypatch, inception_weights_file):
    """With Inception statistics (random-init weights of the real architecture): the record's frame FID equals the
    Frechet distance recomputed here from the features of every test frame and of the first continuation's
    predicted frames (regenerated from the same stream); the classifier FID is unavailable (unlabelled)."""
    from vaebench import paths
    from vaebench.checkpoint import load_checkpoint
    from vaebench.metrics.fid import feature_statistics, frechet_distance
    from vaebench.metrics.inception import inception_features
    from vaebench.metrics.video import predict_samples
    from vaebench.seeds import stream_seed
    from vaebench.stages import classifier, evaluate, fid_reference, prepare, train

    monkeypatch.setenv("VAEBENCH_FID_WEIGHTS", str(inception_weights_file))
    params = video_params(("svg_sigma_learned",))
    params["datasets"]["moving_mnist"].update({"n_test": 2, "test_sequence_length": 6})
    params["train"]["epochs"] = 1
    params["evaluate"].update({"inception": "required", "n_images": 2})
    with in_process_study(tmp_path, params) as study:
        prepare.run(study, "moving_mnist", mirror=mirror)
        assert classifier.run(study, "moving_mnist")["available"] is False
        fid_reference.run(study, "moving_mnist")
        train.run(study, "moving_mnist", "svg_sigma_learned", 0)
        m = evaluate.run(study, "moving_mnist", "svg_sigma_learned", 0)
        assert m["fid_inception_n"] == 2 * 3 and m["fid_inception_reference_n"] == 2 * 6
        assert m["fid_classifier"] is None and "Inception" in m["fid_classifier_unavailable"]
        data = np.load(paths.PREPARED.format(study=study.name, dataset="moving_mnist"))
        weights = str(inception_weights_file)
        ref = feature_statistics(inception_features(torch.from_numpy(data["x_test"]).flatten(0, 1), weights))
        cell = paths.cell_paths(study.name, "moving_mnist", "svg_sigma_learned", 0)
        model, _ = load_checkpoint(cell["checkpoint"], "cpu")
        ecfg = study.cell("moving_mnist", "svg_sigma_learned", 0).evaluate
        x_u8 = torch.from_numpy(data["x_test"][np.load(cell["per_image"])["index"]])
        x = model.preprocess_fixed(x_u8, seed=stream_seed(ecfg.seed, "test_noise"), batch_size=ecfg.batch_size)
        cont = predict_samples(model.eval(), x, 3, stream_seed(ecfg.seed, "video_samples"), batch_size=64)[0]
        fid = frechet_distance(*ref, *feature_statistics(inception_features(cont.flatten(0, 1), weights)))
        assert fid == pytest.approx(m["fid_inception"], rel=1e-6)
