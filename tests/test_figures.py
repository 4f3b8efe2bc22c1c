"""The report's per-dataset figures (vaebench.report.figures) on a small synthetic study.

3 models x 2 seeds in two data spaces (a Bernoulli model on binarised data, two Gaussian models on dequantised
data, one of them without a valid density), training logs with and without log sigma / GECO columns, and
tiny sample / reconstruction PNGs written at the ``paths`` locations. The data functions are checked against
the inputs, the written files for being PNGs of a plausible size and for identical bytes on a rerun.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from PIL import Image

from vaebench import paths
from vaebench.report import figures
from vaebench.report.figures import (DatasetFigures, fid_nll_data, image_layout, image_panels, latent_summary,
                                     model_styles, plot_fid_nll, plot_image_panels, plot_latent,
                                     plot_rate_distortion, plot_training_curves, rate_distortion_data,
                                     training_columns, training_curve_data, write_figures)

STUDY = "figures"   # the study whose cell grids the figures read (paths.cell_paths)
DATASET = "mnist"
MODELS = ["vae_bernoulli", "sigma_vae", "sigma_vae_per_image"]
SEEDS = [0, 1]
SPACE = {"vae_bernoulli": ("bernoulli", "binarised", True), "sigma_vae": ("gaussian", "dequantised", True),
         "sigma_vae_per_image": ("gaussian", "dequantised", False)}
NEW_FIGURES = ("rate_distortion", "fid_nll", "samples", "recon", "training", "latent")


def _record(model: str, seed: int) -> dict:
    family, space, valid = SPACE[model]
    i = MODELS.index(model)
    kl = 20.0 + 3 * i + 0.5 * seed
    recon = (100.0 if space == "binarised" else -600.0 - 10 * i) + seed
    return {
        "dataset": DATASET, "model": model, "seed": seed, "likelihood_family": family, "data_space": space,
        "valid_density": valid, "test_kl_nats": kl, "test_recon_nats": recon, "test_elbo_nats": -(kl + recon),
        "test_nll_iwae_nats": recon + kl - 5.0, "fid_classifier": 50.0 + 10 * i + seed,
        "fid_classifier_std": 1.5, "fid_floor": 4.5, "latent_rate_nats": kl,
        "latent_mutual_info_nats": 5.0 + i + 0.3 * seed, "latent_marginal_kl_nats": kl - 5.0 - i,
        "latent_log_n_nats": math.log(1000), "active_units": 16 - i - seed, "latent_dim": 20,
    }


def _log(model: str, seed: int) -> pd.DataFrame:
    epochs = np.arange(1, 5)
    rec = _record(model, seed)
    frame = {"epoch": epochs, "val_recon": rec["test_recon_nats"] + 30.0 / epochs,
             "val_kl": rec["test_kl_nats"] - 4.0 / epochs}
    frame["val_elbo"] = -(frame["val_recon"] + frame["val_kl"])
    frame["val_loss"] = -frame["val_elbo"]
    if model == "sigma_vae":
        frame.update(log_sigma=-1.0 - 0.1 * epochs - 0.01 * seed, effective_beta=0.2 / epochs,
                     **{"lambda": 1.0 + epochs, "constraint": 5.0 - 2.0 * epochs})
    return pd.DataFrame(frame)


def _study(records=None):
    records = [_record(m, s) for m in MODELS for s in SEEDS] if records is None else records
    logs = {(DATASET, m, s): _log(m, s) for m in MODELS for s in SEEDS}
    return records, logs


def _write_grids(models=MODELS, seeds=SEEDS) -> None:
    """A 3-colour 20 x 20 samples grid and a 20 x 10 reconstruction grid per cell, under the cwd."""
    for i, m in enumerate(models):
        for s in seeds:
            cell = paths.cell_paths(STUDY, DATASET, m, s)
            rng = np.random.RandomState(10 * i + s)
            for key, shape in (("samples_png", (20, 20)), ("recon_png", (20, 10))):
                cell[key].parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.randint(0, 256, shape + (3,), dtype=np.uint8)).save(cell[key])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """write_figures run twice on the same inputs, into two folders: (figures 1, figures 2, root)."""
    root = tmp_path_factory.mktemp("figs")
    records, logs = _study()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _write_grids()
        first = write_figures(STUDY, root / "a", [DATASET], MODELS, SEEDS, records, logs)
        second = write_figures(STUDY, root / "b", [DATASET], MODELS, SEEDS, records, logs)
    return first[DATASET], second[DATASET], root


# ------------------------------------------------------------------------------------------------
# The written files

def test_every_new_figure_is_a_png_of_plausible_size(written):
    fig, _, root = written
    for name in NEW_FIGURES:
        path = getattr(fig, name)
        assert path is not None and path.is_file(), name
        with Image.open(path) as im:
            assert im.format == "PNG", name
            w, h = im.size
        assert 200 <= w <= 4000 and 150 <= h <= 6000, (name, w, h)
        assert path.parent == root / "a"
        assert name in fig.captions and fig.captions[name]
    assert fig.rate_distortion.name == f"{DATASET}_rate_distortion.png"
    assert fig.fid_nll.name == f"{DATASET}_fid_vs_nll.png"
    assert fig.samples.name == f"{DATASET}_samples_by_model.png"
    assert fig.recon.name == f"{DATASET}_recon_by_model.png"
    assert fig.training.name == f"{DATASET}_training_curves.png"
    assert fig.latent.name == f"{DATASET}_latent.png"


def test_files_lists_old_and_new_figures(written):
    fig, _, _ = written
    files = fig.files()
    assert len(files) == len(set(files)) == 2 + 2 * len(MODELS) * len(SEEDS) + len(NEW_FIGURES)
    assert all(p.is_file() for p in files)
    assert {getattr(fig, n) for n in NEW_FIGURES} <= set(files)


def test_old_call_sites_still_build_dataset_figures(tmp_path):
    old = DatasetFigures(tmp_path / "c.png", None, {})
    assert old.files() == [tmp_path / "c.png"] and old.rate_distortion is None and old.captions == {}


def test_same_inputs_give_the_same_bytes(written):
    first, second, _ = written
    a, b = first.files(), second.files()
    assert [p.name for p in a] == [p.name for p in b]
    for p, q in zip(a, b):
        assert p.read_bytes() == q.read_bytes(), p.name


def test_png_carries_no_software_metadata(written):
    fig, _, _ = written
    with Image.open(fig.rate_distortion) as im:
        assert "Software" not in im.info


def test_side_by_side_grids_keep_every_pixel(written):
    """Each model's grid appears unresampled (same pixel scale) in the combined figure."""
    fig, _, root = written
    out = np.asarray(Image.open(fig.samples).convert("RGB"))
    scale = image_layout({m: (20, 20) for m in MODELS}).scale
    assert scale > 1  # tiny grids are enlarged, by an integer factor
    for m in MODELS:
        src = np.asarray(Image.open(root / paths.cell_paths(STUDY, DATASET, m, SEEDS[0])["samples_png"]).convert("RGB"))
        src = src.repeat(scale, axis=0).repeat(scale, axis=1)  # each image pixel a scale x scale block
        h, w = src.shape[:2]
        hits = [(y, x) for y in range(out.shape[0] - h + 1) for x in range(out.shape[1] - w + 1)
                if np.array_equal(out[y:y + h, x:x + w], src)]
        assert len(hits) == 1, m


# ------------------------------------------------------------------------------------------------
# What the figures plot

def test_rate_distortion_has_one_panel_per_data_space_with_the_records_values():
    records, _ = _study()
    data = rate_distortion_data(records, DATASET, MODELS)
    assert data.spaces() == ["binarised", "dequantised"]
    assert data.panel("binarised").models() == ["vae_bernoulli"]
    assert data.panel("dequantised").models() == ["sigma_vae", "sigma_vae_per_image"]
    by_cell = {(p.model, p.seed): p for panel in data.panels for p in panel.points}
    assert len(by_cell) == len(MODELS) * len(SEEDS)
    for r in records:
        p = by_cell[(r["model"], r["seed"])]
        assert (p.x, p.y) == (r["test_kl_nats"], r["test_recon_nats"])
        assert p.valid_density == r["valid_density"]
    assert data.invalid_models() == ["sigma_vae_per_image"]
    assert data.left_out == {}
    assert any("no valid density" in line and "sigma_vae_per_image" in line for line in data.note_lines())


def test_rate_distortion_never_mixes_spaces_on_one_axis():
    records, _ = _study()
    records.append(dict(_record("sigma_vae", 0), model="categorical", data_space="discrete", test_recon_nats=900.0))
    data = rate_distortion_data(records, DATASET, MODELS + ["categorical"])
    assert data.spaces() == ["binarised", "dequantised", "discrete"]
    for panel in data.panels:
        spaces = {next(r["data_space"] for r in records if r["model"] == p.model) for p in panel.points}
        assert spaces == {panel.space}


def test_fid_nll_leaves_out_invalid_densities_and_draws_the_floor():
    records, _ = _study()
    data = fid_nll_data(records, DATASET, MODELS)
    assert data.left_out == {"sigma_vae_per_image": "no valid density"}
    assert data.spaces() == ["binarised", "dequantised"]
    assert [p.hline for p in data.panels] == [4.5, 4.5]
    p = next(p for p in data.panel("dequantised").points if p.seed == 1)
    r = _record("sigma_vae", 1)
    assert (p.model, p.x, p.y, p.yerr) == ("sigma_vae", r["test_nll_iwae_nats"], r["fid_classifier"], 1.5)
    assert "sigma_vae_per_image (no valid density)" in " ".join(data.note_lines())


@pytest.mark.parametrize("missing", [None, float("nan"), "n/a"])
def test_a_model_missing_a_metric_is_left_out_not_a_crash(tmp_path, missing):
    records, logs = _study()
    for r in records:
        if r["model"] == "sigma_vae":
            r.update(test_kl_nats=missing, fid_classifier=missing, latent_mutual_info_nats=missing)
            del r["test_recon_nats"]
    rd = rate_distortion_data(records, DATASET, MODELS)
    assert "sigma_vae" in rd.left_out and "sigma_vae" not in rd.panel("dequantised").models()
    fn = fid_nll_data(records, DATASET, MODELS)
    assert "sigma_vae" in fn.left_out and fn.spaces() == ["binarised"]  # the other dequantised model is invalid
    lat = latent_summary(records, DATASET, MODELS)
    assert "latent_mutual_info_nats" not in lat.stats["sigma_vae"] and "latent_rate_nats" in lat.stats["sigma_vae"]
    assert "no latent_mutual_info_nats" in lat.left_out["sigma_vae"]
    assert plot_rate_distortion(rd, tmp_path / "rd.png").is_file()
    assert plot_fid_nll(fn, tmp_path / "fn.png").is_file()
    assert plot_latent(lat, tmp_path / "lat.png", MODELS).is_file()


def test_a_seed_missing_a_value_is_named_and_the_other_seed_plotted():
    records, _ = _study()
    next(r for r in records if r["model"] == "vae_bernoulli" and r["seed"] == 1)["test_kl_nats"] = float("nan")
    data = rate_distortion_data(records, DATASET, MODELS)
    assert [p.seed for p in data.panel("binarised").points] == [0]
    assert "seed 1" in data.left_out["vae_bernoulli"]


def test_nothing_to_plot_writes_nothing(tmp_path):
    records = [{"dataset": DATASET, "model": m, "seed": 0} for m in MODELS]
    rd = rate_distortion_data(records, DATASET, MODELS)
    assert rd.panels == [] and set(rd.left_out) == set(MODELS)
    assert plot_rate_distortion(rd, tmp_path / "rd.png") is None
    assert plot_fid_nll(fid_nll_data(records, DATASET, MODELS), tmp_path / "fn.png") is None
    assert plot_latent(latent_summary(records, DATASET, MODELS), tmp_path / "lat.png") is None
    assert plot_training_curves(training_curve_data(DATASET, MODELS, [0], {}), DATASET, tmp_path / "t.png") is None
    assert not list(tmp_path.iterdir())


def test_latent_summary_is_the_mean_with_a_student_t_interval():
    records, _ = _study()
    lat = latent_summary(records, DATASET, MODELS)
    values = [_record("sigma_vae", s)["latent_mutual_info_nats"] for s in SEEDS]
    stat = lat.stats["sigma_vae"]["latent_mutual_info_nats"]
    half = scipy.stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    assert stat.mean == pytest.approx(np.mean(values)) and stat.half_width == pytest.approx(half)
    assert stat.n == 2 and lat.latent_dim["sigma_vae"] == 20 and lat.log_n == pytest.approx(math.log(1000))
    single = latent_summary([r for r in records if r["seed"] == 0], DATASET, MODELS)
    assert single.stats["sigma_vae"]["active_units"].half_width is None


def test_training_curves_mean_over_seeds_and_hidden_columns(tmp_path):
    _, logs = _study()
    data = training_curve_data(DATASET, MODELS, SEEDS, logs)
    assert set(data["vae_bernoulli"]) == {"neg_val_elbo", "val_recon", "val_kl"}
    assert {"log_sigma", "effective_beta", "lambda", "constraint"} <= set(data["sigma_vae"])
    kl = data["sigma_vae"]["val_kl"]
    want = (logs[(DATASET, "sigma_vae", 0)]["val_kl"] + logs[(DATASET, "sigma_vae", 1)]["val_kl"]).to_numpy() / 2
    np.testing.assert_allclose(kl.mean.to_numpy(), want)
    np.testing.assert_allclose(data["sigma_vae"]["neg_val_elbo"].per_seed[1].to_numpy(),
                               -logs[(DATASET, "sigma_vae", 1)]["val_elbo"].to_numpy())
    assert training_columns(data) == [0, 1, 2, 3]
    plain = {m: c for m, c in data.items() if m != "sigma_vae"}
    assert training_columns(plain) == [0, 1]  # no model logs log sigma / GECO: those columns hidden
    assert plot_training_curves(plain, DATASET, tmp_path / "t.png").is_file()


def test_training_curves_survive_missing_logs_and_nan_columns():
    _, logs = _study()
    del logs[(DATASET, "sigma_vae", 1)]
    logs[(DATASET, "vae_bernoulli", 0)]["val_kl"] = np.nan
    data = training_curve_data(DATASET, MODELS, SEEDS, logs)
    assert list(data["sigma_vae"]["val_kl"].per_seed) == [0]
    assert list(data["vae_bernoulli"]["val_kl"].per_seed) == [1]


def test_image_panels_and_layout(tmp_path, monkeypatch):
    assert image_panels(STUDY, DATASET, MODELS, 0, "recon")[1] == ("sigma_vae",
                                                            paths.cell_paths(STUDY, DATASET, "sigma_vae", 0)["recon_png"])
    with pytest.raises(ValueError):
        image_panels(STUDY, DATASET, MODELS, 0, "latents")
    layout = image_layout({m: (20, 30) for m in "abcdefg"}, max_width_px=100)
    assert layout.scale == 256 // 30 and layout.ncols * layout.nrows >= 7 and layout.panel_w == 30 * layout.scale
    with pytest.raises(ValueError):
        image_layout({})
    monkeypatch.chdir(tmp_path)
    _write_grids(MODELS[:2], [0])
    panels = image_panels(STUDY, DATASET, MODELS, 0, "samples")  # the third model's file is missing
    path, layout = plot_image_panels(panels, tmp_path / "g.png", "t")
    assert path.is_file() and layout.shown == MODELS[:2] and layout.missing == MODELS[2:]
    assert plot_image_panels([("x", tmp_path / "none.png")], tmp_path / "h.png", "t") == (None, None)


def test_model_styles_are_distinct_and_stable():
    models = [f"m{i}" for i in range(20)]
    styles = model_styles(models)
    assert len({c for c, _ in styles.values()}) == 20
    assert model_styles(models[:5]) == {m: styles[m] for m in models[:5]}
    assert figures.model_styles(MODELS) == model_styles(MODELS)


# ------------------------------------------------------------------------------------------------
# Lossless encoding and the video figures

@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L"])
def test_smallest_mode_is_lossless_and_drops_only_redundant_channels(mode):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    rgb = np.stack([grey, grey, grey], -1)
    if mode != "L":
        rgb[0, 0] = (1, 2, 3)                                   # one coloured pixel keeps the colour channels
    rgba = np.concatenate([rgb, np.full((9, 7, 1), 255, np.uint8)], -1)
    if mode == "RGBA":
        rgba[1, 1, 3] = 128                                     # one translucent pixel keeps the alpha channel
    out = figures.smallest_mode(Image.fromarray(rgba, "RGBA"))
    assert out.mode == mode
    assert np.array_equal(np.asarray(out.convert("RGBA")), rgba)


def _video_grid(path: Path, truth: np.ndarray, rows: list[np.ndarray], padding: int = 2) -> Path:
    """A grid as evaluate writes it: per sequence, its truth row then ``rows``' rows; frames (S, T, h, w) uint8."""
    s, t, h, w = truth.shape
    lines = [r[i] for i in range(s) for r in [truth, *rows]]
    out = np.zeros((len(lines) * (h + padding) + padding, t * (w + padding) + padding), np.uint8)
    for i, line in enumerate(lines):
        for j in range(t):
            out[padding + i * (h + padding):padding + i * (h + padding) + h,
                padding + j * (w + padding):padding + j * (w + padding) + w] = line[j]
    Image.fromarray(out, "L").convert("RGB").save(path)
    return path


def test_continuations_gif_shows_truth_then_each_models_best_continuation(tmp_path):
    rng = np.random.default_rng(1)
    s, t, side = 3, 4, 5
    truth = rng.integers(0, 256, (s, t, side, side), dtype=np.uint8)
    best = {m: rng.integers(0, 256, (s, t, side, side), dtype=np.uint8) for m in ("a", "b")}
    panels = [(m, _video_grid(tmp_path / f"{m}.png", truth, [best[m], 255 - best[m]])) for m in best]
    path = figures.continuations_gif(panels, t, tmp_path / "c.gif", sequences=2)
    gif = Image.open(path)
    step = side + 2
    assert gif.n_frames == t and gif.size == (3 * step + 2, 2 * step + 2)    # truth + 2 models; 2 of 3 sequences
    for frame in range(t):
        gif.seek(frame)
        img = np.asarray(gif.convert("L"))
        for i in range(2):
            for j, expected in enumerate([truth, best["a"], best["b"]]):
                tile = img[2 + i * step:2 + i * step + side, 2 + j * step:2 + j * step + side]
                assert np.array_equal(tile, expected[i, frame]), (frame, i, j)
    other = _video_grid(tmp_path / "other.png", 255 - truth, [best["a"], best["a"]])
    with pytest.raises(ValueError, match="same test sequences"):
        figures.continuations_gif([panels[0], ("c", other)], t, tmp_path / "d.gif", sequences=2)
    with pytest.raises(ValueError, match="does not hold 5 frames"):
        figures.continuations_gif(panels, 5, tmp_path / "e.gif", sequences=2)


def test_video_stills_keep_the_first_sequences_rows(tmp_path):
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 256, (3, 4, 5, 5), dtype=np.uint8)
    grid = _video_grid(tmp_path / "g.png", truth, [truth, truth])               # 3 rows per sequence
    height = figures.video_rows_height([("m", grid)], 4, "samples", 2)
    assert height == 2 * len(paths.VIDEO_GRID_ROWS["samples_png"]) * 7 + 2
    assert figures.video_rows_height([("m", grid)], 4, "recon", 1) == 2 * 7 + 2
    assert figures.video_rows_height([("m", tmp_path / "none.png")], 4, "samples", 2) is None
    path, layout = plot_image_panels([("m", grid)], tmp_path / "p.png", "t", scale=1, height=height)
    out = np.asarray(Image.open(path).convert("RGB"))
    src = np.asarray(Image.open(grid).convert("RGB"))
    kept, dropped = src[:height], src[:height + 7]
    hits = lambda a: [(y, x) for y in range(out.shape[0] - a.shape[0] + 1) for x in range(out.shape[1] - a.shape[1] + 1)
                      if np.array_equal(out[y:y + a.shape[0], x:x + a.shape[1]], a)]
    assert len(hits(kept)) == 1 and hits(dropped) == []
