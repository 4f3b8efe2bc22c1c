"""Report stage on a fake 1 dataset x 2 models x 2 seeds study written at the ``paths`` locations."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vaebench import paths, published
from vaebench.io import write_json
from vaebench.report import SUMMARY_COLUMNS, aggregate_over_seeds, build_report

DATASET = "mnist"
MODELS = ["vae_bernoulli", "sigma_vae"]
SEEDS = [0, 1]
IWAE_K = 37  # unusual values so that finding them in the protocol text means something
FID_N = 123


def _params() -> dict:
    return {
        "study": "fake",
        "grid": {"datasets": [DATASET], "models": MODELS, "seeds": SEEDS},
        "models": {
            "vae_bernoulli": {"architecture": "mlp", "latent_dim": 8, "posterior": "diagonal",
                              "likelihood": {"family": "bernoulli"},
                              "objective": {"name": "elbo", "beta": 1.0}},
            "sigma_vae": {"architecture": "conv", "latent_dim": 8, "posterior": "diagonal",
                          "likelihood": {"family": "gaussian", "sigma": "learned_shared"},
                          "objective": {"name": "elbo", "beta": 1.0}, "train": {"lr": 0.0005}},
        },
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.001},
        "evaluate": {"iwae_k": IWAE_K, "iwae_n": 200, "elbo_n": 500, "fid_n": FID_N, "grid_n": 16},
        "classifier": {"epochs": 2},
        "datasets": {DATASET: {"n_validation": 1000, "max_train": 5000, "max_validation": None,
                               "max_test": 500}},
    }


def _metrics(model: str, seed: int) -> dict:
    bern = model == "vae_bernoulli"
    base = 100.0 if bern else -700.0
    return {
        "dataset": DATASET, "model": model, "seed": seed, "study": "fake",
        "architecture": "mlp" if bern else "conv", "latent_dim": 8, "posterior": "diagonal",
        "likelihood": "bernoulli" if bern else "gaussian/learned_shared", "objective": "elbo",
        "beta": 1.0,
        "data_treatment": ("dynamically binarised: x ~ Bernoulli(pixel/255)" if bern
                           else "uniformly dequantised: (pixel + u)/256"),
        "test_elbo_nats": -(base + 3.0 * seed + 0.25), "test_recon_nats": base + 2.0 * seed,
        "test_kl_nats": 20.0 + seed, "elbo_n_images": 500,
        "test_nll_iwae_nats": base - 5.0 + 1.5 * seed, "iwae_k": IWAE_K, "iwae_n_images": 200,
        "bits_per_dim": 0.2 + 0.01 * seed if bern else 1.1 + 0.02 * seed,
        "likelihood_of": ("binarised test images" if bern
                          else "8-bit test images (upper bound via dequantisation)"),
        "fid_classifier": 10.0 + seed + (0 if bern else 5), "fid_n": FID_N,
        "fid_reference": f"first {FID_N} test images", "classifier_test_accuracy": 0.98,
        "train_seconds": 60.0 + seed, "eval_seconds": 5.0, "epochs": 3, "device": "cpu",
        "effective_beta": None if bern else 0.02 + 0.01 * seed,
        "log_sigma": None if bern else -2.0 - 0.1 * seed,
        "lambda": None, "mlflow_run_id": None,
    }


def _png(path: Path, value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.full((8, 8), value), cmap="gray", vmin=0, vmax=1)


def _write_cell(model: str, seed: int) -> None:
    files = paths.cell_paths(DATASET, model, seed)
    write_json(files["metrics"], _metrics(model, seed))
    log = pd.DataFrame({
        "epoch": [1, 2, 3], "seconds": [1.0, 2.0, 3.0],
        "train_loss": [120.0, 110.0, 105.0], "train_elbo": [-120.0, -110.0, -105.0],
        "train_recon": [100.0, 92.0, 88.0], "train_kl": [20.0, 18.0, 17.0],
        "val_loss": [121.0, 111.0, 106.0 + seed], "val_elbo": [-121.0, -111.0, -106.0 - seed],
        "val_recon": [101.0, 93.0, 89.0], "val_kl": [20.0, 18.0, 17.0],
    })
    if model == "sigma_vae":
        log["log_sigma"] = [-1.0, -1.5, -2.0 - 0.1 * seed]
        log["effective_beta"] = [0.2, 0.1, 0.02]
    files["train_log"].parent.mkdir(parents=True, exist_ok=True)
    log.to_csv(files["train_log"], index=False)
    _png(files["samples_png"], 0.3)
    _png(files["recon_png"], 0.7)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Build the fake study once (figures take a moment) and report on it."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for m in MODELS:
            for s in SEEDS:
                _write_cell(m, s)
        write_json(paths.CLASSIFIER_METRICS.format(dataset=DATASET),
                   {"test_accuracy": 0.9876, "val_accuracy": 0.99, "epochs": 2, "train_seconds": 9.0,
                    "feature_dim": 128})
        result = build_report(_params())
    return root, result


def test_summary_has_one_row_per_cell_with_values(study):
    root, result = study
    assert result["n_cells"] == 4
    df = pd.read_csv(root / paths.SUMMARY_CSV)
    assert list(df.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert len(df) == 4
    assert sorted(zip(df["model"], df["seed"])) == sorted((m, s) for m in MODELS for s in SEEDS)
    for m in MODELS:
        for s in SEEDS:
            row = df[(df["model"] == m) & (df["seed"] == s)].iloc[0]
            want = _metrics(m, s)
            for col in ("test_elbo_nats", "test_nll_iwae_nats", "bits_per_dim", "fid_classifier",
                        "train_seconds", "iwae_k"):
                assert row[col] == pytest.approx(want[col])
            assert row["likelihood"] == want["likelihood"]
    assert df.loc[df["model"] == "vae_bernoulli", "log_sigma"].isna().all()


def test_metrics_json_mean_std_match_numpy(study):
    root, _ = study
    text = (root / paths.REPORT_METRICS).read_text()
    assert "NaN" not in text
    agg = json.loads(text)
    for m in MODELS:
        for key in ("test_elbo_nats", "test_nll_iwae_nats", "bits_per_dim", "fid_classifier"):
            values = np.array([_metrics(m, s)[key] for s in SEEDS])
            got = agg[DATASET][m][key]
            assert got["mean"] == pytest.approx(values.mean())
            assert got["std"] == pytest.approx(values.std(ddof=1))
            assert got["n_seeds"] == 2
    assert "log_sigma" in agg[DATASET]["sigma_vae"]
    assert "log_sigma" not in agg[DATASET]["vae_bernoulli"]  # no value at all -> omitted
    assert "seed" not in agg[DATASET]["sigma_vae"]


def test_html_is_self_contained_and_states_the_protocol(study):
    root, _ = study
    text = (root / paths.REPORT_HTML).read_text()
    for m in MODELS:
        assert m in text
    assert "data:image/png;base64," in text
    assert not re.search(r'src="(?!data:)', text)  # every image embedded
    protocol = text[text.index(">Protocol<"):]
    assert f"k = {IWAE_K}" in protocol
    assert f"N = {FID_N}" in protocol
    assert "0.9876" in protocol and "feature dimension 128" in protocol
    assert "max_train = 5000" in protocol and "1000" in protocol


def test_markdown_references_existing_figures(study):
    root, result = study
    md_path = root / paths.REPORT_MD
    refs = re.findall(r"\]\((figures/[^)]+)\)", md_path.read_text())
    assert refs
    for ref in refs:
        assert (md_path.parent / ref).is_file(), ref
    fig_names = {Path(r).name for r in refs}
    assert f"{DATASET}_validation_curves.png" in fig_names
    assert f"{DATASET}_log_sigma_lambda.png" in fig_names
    assert all(Path(root, p).is_file() for p in result["figures"])


def test_published_comparison_rows_for_models_in_study(study):
    root, _ = study
    md = (root / paths.REPORT_MD).read_text()
    section = md[md.index("Comparison with published numbers"):md.index("### Training curves")]
    # IWAE Table 1, VAE 1 layer k = 1 (our vae_bernoulli trains with k = 1) and SVAE Table 3 FIDs
    assert "86.76" in section and "86.47" not in section
    assert "32.22" in section and "32.18" in section
    assert "beta_vae" not in section and "53.23" not in section  # not in the study -> not shown
    # ours next to it: the mean of -L_k over the two seeds
    mean_nll = np.mean([_metrics("vae_bernoulli", s)["test_nll_iwae_nats"] for s in SEEDS])
    assert f"{mean_nll:.2f}" in section


def test_single_seed_std_is_null_and_nonfinite_values_are_left_out():
    recs = [_metrics("sigma_vae", 0)]
    agg = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]
    assert agg["test_elbo_nats"] == {"mean": recs[0]["test_elbo_nats"], "std": None, "n_seeds": 1}
    recs = [_metrics("sigma_vae", 0), {**_metrics("sigma_vae", 1), "fid_classifier": float("nan")}]
    fid = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]["fid_classifier"]
    assert fid == {"mean": recs[0]["fid_classifier"], "std": None, "n_seeds": 1, "n_excluded": 1}


def test_published_entries_filter_by_training_k():
    rows = published.entries_for("MNIST", ["iwae"], {"iwae": 5})
    assert [r["value"] for r in rows if r["metric"] == "nll_nats"] == [85.54]
    rows = published.entries_for("mnist", ["iwae"], {"iwae": 7})  # no match: all k shown
    assert len([r for r in rows if r["metric"] == "nll_nats"]) == 3


def test_missing_cell_file_raises_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for m in MODELS:
        for s in SEEDS:
            _write_cell(m, s)
    missing = paths.cell_paths(DATASET, "sigma_vae", 1)["train_log"]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(_params())
    assert not Path(paths.SUMMARY_CSV).exists()
    assert not Path(paths.REPORT_METRICS).exists()
