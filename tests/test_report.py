"""Report stage on a fake 1 dataset x 5 models x 3 seeds study written at the ``paths`` locations.

The metrics files use the structured fields of the evaluate stage (likelihood_family, data_space,
valid_density, objective_params, the whole ``cell`` record, ...) and every cell has its per_image.npz, whose
arrays the metrics are computed from (as the evaluate stage does). Values that the report must take from the
cells' configuration records are unusual on purpose, so that finding them in the text means something.
The paired comparisons and flags are checked against numbers recomputed here with numpy / scipy.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from vaebench import dag, paths
from vaebench.atomic import write_json
from vaebench.report import build_report, output_paths
from vaebench.report import published
from vaebench.report.collect import SUMMARY_COLUMNS, CellData, aggregate_over_seeds, summary_frame
from vaebench.report.figures import likelihood_groups
from vaebench.report.flags import diagnose, geco_status, lk_status
from vaebench.report.paired import LIKELIHOOD_METRICS, compare_pair, paired_comparisons
from vaebench.report.render import OPTIONAL_PICTURES, PICTURES
from vaebench.report.protocol import likelihood_items
from vaebench.report.tables.comparisons import comparison_table

STUDY = "fake"     # the fake study's name: its cells live under data/studies/fake, its report under reports/fake
DATASET = "mnist"
MODELS = ["vae_bernoulli", "sigma_vae", "sigma_vae_per_image", "vae_gaussian", "geco"]
SEEDS = [0, 1, 2]
N_IMAGES = 40      # evaluate.n_images
INDEX = np.sort(np.random.RandomState(5).choice(500, N_IMAGES, replace=False)).astype(np.int64)
IWAE_K = 37        # evaluate.iwae_k
LK_TOL = 1.0       # evaluate.lk_tolerance_nats
LATENT_N = 31      # evaluate.latent_n
FID_N = 123        # evaluate.fid_n
FID_SEEDS = 3      # evaluate.fid_seeds
FID_FLOOR = 2.5
GRID_N = 23        # evaluate.grid_n (only in the cell records)
EVAL_SEED = 4321   # evaluate.seed (only in the cell records)
N_VALIDATION = 1717
SIGMA_LR = 0.0005  # sigma_vae's own learning rate; the others use 0.001
KAPPA = 4.0        # geco's sse tolerance: |C_ma| threshold 0.1 kappa^2 = 1.6

DATA_SPACES = {
    "binarised": ("dynamically binarised: x ~ Bernoulli(pixel/255) (test set binarised once, fixed seed)",
                  "binarised test images (a likelihood of the binarised data, not of the 8-bit images)"),
    "dequantised": ("uniformly dequantised: (pixel + u)/256, u ~ U[0,1) (test set dequantised once, fixed seed)",
                    "8-bit test images (upper bound on -log P via dequantisation: continuous NLL + D ln 256)"),
}
LIKELIHOODS = {  # model -> (likelihood, family, sigma_mode, data_space, valid_density, params)
    "vae_bernoulli": ("bernoulli", "bernoulli", None, "binarised", True, {}),
    "sigma_vae": ("gaussian_learned_shared", "gaussian", "learned_shared", "dequantised", True,
                  {"log_sigma_min": -6.0}),
    "sigma_vae_per_image": ("gaussian_optimal_per_image", "gaussian", "optimal_per_image", "dequantised", False,
                            {"log_sigma_min": -6.0}),
    "vae_gaussian": ("gaussian_fixed", "gaussian", "fixed", "dequantised", True, {"sigma": 1.0}),
    "geco": ("gaussian_learned_shared", "gaussian", "learned_shared", "dequantised", True, {"log_sigma_min": -6.0}),
}
GECO_PARAMS = {"constraint": "sse", "kappa": KAPPA, "alpha": 0.99, "lambda_init": 1.0, "lambda_lr": 0.0001}
# per model: mean NLL (nats/image), L_k - L_{k/10} gap, FID offset
BASE_NLL = {"vae_bernoulli": 100.0, "sigma_vae": -700.0, "sigma_vae_per_image": -900.0, "vae_gaussian": -650.0,
            "geco": -690.0}
LK_GAP = {"vae_gaussian": 1.5}         # above LK_TOL: flagged; the others 0.3
FID_OFFSET = {"vae_bernoulli": 0.0, "sigma_vae": 5.0, "sigma_vae_per_image": 6.0, "vae_gaussian": 9.0, "geco": 2.0}
FID_JITTER = [0.1, -0.05, 0.02]
# geco's end of training per seed: (C_ma, lambda trace over the 3 epochs). Seed 0 settled, seed 1 |C_ma| too
# large, seed 2 lambda still moving (10% over the last epoch).
GECO_END = {0: (0.5, [3.0, 2.0, 2.02]), 1: (-2.0, [3.0, 2.0, 2.01]), 2: (0.1, [3.0, 2.0, 2.2])}


@dataclasses.dataclass
class FakeStudy:
    """What build_report reads of a vaebench.config.Study."""

    name: str
    dataset_names: list
    model_names: list
    seeds: list
    # the study file's settings build_report reads (only ``source``: a study of our own, no published numbers)
    config: Any = dataclasses.field(default_factory=lambda: SimpleNamespace(source=None))
    sweeps: dict = dataclasses.field(default_factory=dict)      # no sweep points

    def cells(self):
        return [(d, m, s) for d in self.dataset_names for m in self.model_names for s in self.seeds]


def _study(models=MODELS, seeds=SEEDS) -> FakeStudy:
    return FakeStudy(STUDY, [DATASET], list(models), list(seeds))


def _objective(model: str, objective_params: dict | None) -> tuple[str, dict]:
    if model == "geco":
        return "geco", dict(GECO_PARAMS)
    return "elbo", ({"beta": 1.0} if objective_params is None else objective_params)


def _cell_record(model: str, seed: int, objective_params: dict | None = None) -> dict:
    lik, _, _, _, _, lik_params = LIKELIHOODS.get(model, LIKELIHOODS["vae_bernoulli"])
    objective, params = _objective(model, objective_params)
    return {
        "study": STUDY, "dataset": DATASET, "model": model, "seed": seed, "device": "auto",
        "model_config": {"description": f"{model} (fake)", "latent_dim": 8,
                         "architecture": {"name": "mlp", "hidden_dims": [64, 32]},
                         "posterior": {"name": "diagonal"}, "likelihood": {"name": lik, **lik_params},
                         "objective": {"name": objective, **params}},
        "train": {"epochs": 3, "batch_size": 64, "lr": SIGMA_LR if model == "sigma_vae" else 0.001},
        "evaluate": {"n_images": N_IMAGES, "iwae_k": IWAE_K, "lk_tolerance_nats": LK_TOL, "latent_n": LATENT_N,
                     "fid_n": FID_N, "fid_seeds": FID_SEEDS, "grid_n": GRID_N, "batch_size": 100,
                     "memory_mb": 256.0, "seed": EVAL_SEED},
        "data": {"n_validation": N_VALIDATION, "max_train": 5000, "max_validation": None, "max_test": 500},
    }


def _per_image(model: str, seed: int) -> dict[str, np.ndarray]:
    """Per-image arrays of one cell: image difficulty shared by every model (what pairing removes), a seed
    effect, and per-cell noise; gaussian decoders also get the discretised column."""
    difficulty = np.random.RandomState(99).normal(0.0, 10.0, N_IMAGES)
    rng = np.random.RandomState(1000 * MODELS.index(model) + seed if model in MODELS else 7 + seed)
    nll = BASE_NLL.get(model, 100.0) + difficulty + 0.7 * seed + rng.normal(0.0, 1.0, N_IMAGES)
    lk = -nll
    kl = 20.0 + seed + rng.uniform(0.0, 2.0, N_IMAGES)
    recon = nll + 5.0 - kl + rng.normal(0.0, 0.5, N_IMAGES)
    out = {"index": INDEX.copy(), "elbo": -(recon + kl), "recon": recon, "kl": kl, "L_k": lk,
           "L_k10": lk - LK_GAP.get(model, 0.3) + rng.normal(0.0, 0.05, N_IMAGES),
           "latent_rate": kl}
    if LIKELIHOODS.get(model, LIKELIHOODS["vae_bernoulli"])[1] == "gaussian":
        lkd = lk - 1500.0 + rng.normal(0.0, 0.3, N_IMAGES)
        out.update({"L_k_discretised": lkd, "L_k10_discretised": lkd - 0.2, "elbo_discretised": out["elbo"] - 1510.0,
                    "recon_discretised": recon + 1510.0})
    return out


def _se(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1) / math.sqrt(len(v)))


def _metrics(model: str, seed: int, objective_params: dict | None = None) -> dict:
    lik, family, sigma_mode, space, valid, lik_params = LIKELIHOODS.get(model, LIKELIHOODS["vae_bernoulli"])
    objective, params = _objective(model, objective_params)
    bern = family == "bernoulli"
    treatment, likelihood_of = DATA_SPACES[space]
    pi = _per_image(model, seed)
    dim_ln2 = 784 * math.log(2)
    offset = 0.0 if bern else 784 * math.log(256)
    jitter = FID_JITTER[seed % 3] * (1 + MODELS.index(model) if model in MODELS else 1)
    fids = [10.0 + seed + FID_OFFSET.get(model, 0.0) + jitter + j for j in (-0.2, 0.0, 0.2)]
    rec = {
        "study": STUDY, "dataset": DATASET, "model": model, "seed": seed,
        "architecture": "mlp", "architecture_params": {"hidden_dims": [64, 32]},
        "architecture_description": "fully connected encoder and decoder", "latent_dim": 8,
        "description": f"{model} (fake)",
        "posterior": "diagonal", "posterior_params": {}, "posterior_description": "diagonal Gaussian",
        "likelihood": lik, "likelihood_family": family, "sigma_mode": sigma_mode, "data_space": space,
        "data_treatment": treatment, "likelihood_of": likelihood_of, "valid_density": valid,
        "likelihood_description": f"{lik} decoder", "likelihood_params": lik_params,
        "objective": objective, "objective_params": params, "objective_description": objective,
        "cell": _cell_record(model, seed, objective_params),
        "n_images": N_IMAGES,
        "test_elbo_nats": float(pi["elbo"].mean()), "test_elbo_se": _se(pi["elbo"]),
        "test_recon_nats": float(pi["recon"].mean()), "test_kl_nats": float(pi["kl"].mean()),
        "test_nll_iwae_nats": float(-pi["L_k"].mean()), "test_nll_iwae_se": _se(pi["L_k"]),
        "iwae_k": IWAE_K, "lk_gap_nats": float((pi["L_k"] - pi["L_k10"]).mean()),
        "lk_gap_se": _se(pi["L_k"] - pi["L_k10"]), "lk_tolerance_nats": LK_TOL,
        "lk_converged": bool((pi["L_k"] - pi["L_k10"]).mean() <= LK_TOL),
        "bits_per_dim": float((-pi["L_k"].mean() + offset) / dim_ln2),
        "latent_rate_nats": float(pi["kl"].mean()), "latent_marginal_kl_nats": 3.0 + 0.1 * seed,
        "latent_mutual_info_nats": float(pi["kl"].mean()) - 3.0 - 0.1 * seed,
        "latent_log_n_nats": math.log(LATENT_N), "active_units": 6 + seed % 2, "latent_n": LATENT_N,
        "fid_classifier": float(np.mean(fids)), "fid_classifier_std": float(np.std(fids, ddof=1)),
        "fid_classifier_per_seed": fids, "fid_classifier_draws": None if bern else 30.0 + seed,
        "fid_n": FID_N, "fid_seeds": FID_SEEDS, "fid_floor": FID_FLOOR, "fid_floor_n": FID_N,
        "fid_reference": f"{FID_N} prior samples (decoder means, 8-bit; mean over {FID_SEEDS} sample seeds) vs "
                         "the statistics of all 500 test images",
        "classifier_test_accuracy": 0.9876, "classifier_val_accuracy": None, "classifier_epochs": 2,
        "classifier_feature_dim": 128,
        "train_seconds": 60.0 + seed, "eval_seconds": 5.0, "epochs": 3, "device": "cpu",
        "effective_beta": None if bern else 0.02 + 0.01 * seed,
        "log_sigma": None if bern else -2.0 - 0.1 * seed,
        "lambda": None, "geco_constraint_ma": None, "mlflow_run_id": None,
    }
    if not bern:
        lkd = pi["L_k_discretised"]
        rec.update({
            "test_elbo_discretised_nats": float(pi["elbo_discretised"].mean()),
            "test_elbo_discretised_se": _se(pi["elbo_discretised"]),
            "test_nll_iwae_discretised_nats": float(-lkd.mean()), "test_nll_iwae_discretised_se": _se(lkd),
            "lk_gap_discretised_nats": float((lkd - pi["L_k10_discretised"]).mean()),
            "bits_per_dim_discretised": float(-lkd.mean() / dim_ln2),
        })
    if model == "geco":
        c_ma, trace = GECO_END[seed]
        rec.update({"lambda": trace[-1], "geco_constraint_ma": c_ma, "effective_beta": 1.0 / trace[-1]})
    return rec


def _png(path: Path, value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.full((8, 8), value), cmap="gray", vmin=0, vmax=1)


def _log(model: str, seed: int) -> pd.DataFrame:
    log = pd.DataFrame({
        "epoch": [1, 2, 3], "seconds": [1.0, 2.0, 3.0],
        "train_loss": [120.0, 110.0, 105.0], "train_elbo": [-120.0, -110.0, -105.0],
        "train_recon": [100.0, 92.0, 88.0], "train_kl": [20.0, 18.0, 17.0],
        "val_loss": [121.0, 111.0, 106.0 + seed], "val_elbo": [-121.0, -111.0, -106.0 - seed],
        "val_recon": [101.0, 93.0, 89.0], "val_kl": [20.0, 18.0, 17.0],
    })
    if model != "vae_bernoulli":
        log["log_sigma"] = [-1.0, -1.5, -2.0 - 0.1 * seed]
        log["effective_beta"] = [0.2, 0.1, 0.02]
    if model == "geco":
        c_ma, trace = GECO_END[seed]
        log["lambda"] = trace
        log["constraint"] = [30.0, 10.0, c_ma]
    return log


def _write_npz(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _write_cell(model: str, seed: int) -> None:
    files = paths.cell_paths(STUDY, DATASET, model, seed)
    write_json(files["metrics"], _metrics(model, seed))
    _write_npz(files["per_image"], _per_image(model, seed))
    files["train_log"].parent.mkdir(parents=True, exist_ok=True)
    _log(model, seed).to_csv(files["train_log"], index=False)
    _png(files["samples_png"], 0.3)
    _png(files["recon_png"], 0.7)


REPO = Path(__file__).resolve().parents[1]
# the fake study's report files (paths.REPORT_* of STUDY)
SUMMARY_CSV, REPORT_METRICS, REPORT_HTML, REPORT_MD = (t.format(study=STUDY) for t in (
    paths.SUMMARY_CSV, paths.REPORT_METRICS, paths.REPORT_HTML, paths.REPORT_MD))


def _write_study() -> None:
    """Every cell of the fake study, and the repository's claims file, under the working directory."""
    Path(paths.CLAIMS).write_text((REPO / paths.CLAIMS).read_text())
    for m in MODELS:
        for s in SEEDS:
            _write_cell(m, s)


def _cell_data(model: str, seed: int, per_image: dict | None = None, record: dict | None = None,
               log: pd.DataFrame | None = None) -> CellData:
    """An in-memory cell (no files) for the unit tests of comparisons and flags."""
    return CellData((DATASET, model, seed), record or _metrics(model, seed),
                    _log(model, seed) if log is None else log,
                    {"metrics": Path(f"{model}/seed{seed}/metrics.json"),
                     "per_image": Path(f"{model}/seed{seed}/per_image.npz")},
                    _per_image(model, seed) if per_image is None else per_image)


def _no_report_written() -> bool:
    return not any(Path(p.format(study=STUDY)).exists() for p in dag.REPORT_OUTPUTS)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Build the fake study once (figures take a moment) and report on it."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _write_study()
        result = build_report(_study())
    return root, result


def _protocol(text: str, marker: str) -> str:
    return text[text.index(marker):]


# ------------------------------------------------------------------------------------------------
# summary.csv and metrics.json

def test_summary_has_one_row_per_cell_with_flattened_fields(report):
    root, result = report
    assert result["n_cells"] == len(MODELS) * len(SEEDS)
    assert result["summary_csv"] == str(Path(SUMMARY_CSV))
    df = pd.read_csv(root / SUMMARY_CSV)
    assert list(df.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    extra = list(df.columns[len(SUMMARY_COLUMNS):])
    assert extra == sorted(extra)
    assert "objective_params.beta" in extra and "likelihood_params.log_sigma_min" in extra
    assert "cell" not in df.columns and not any(c.startswith("cell.") for c in df.columns)
    assert "objective_params" not in df.columns
    assert len(df) == len(MODELS) * len(SEEDS)
    for m in MODELS:
        for s in SEEDS:
            row = df[(df["model"] == m) & (df["seed"] == s)].iloc[0]
            want = _metrics(m, s)
            for col in ("test_elbo_nats", "test_nll_iwae_nats", "bits_per_dim", "fid_classifier",
                        "train_seconds", "iwae_k"):
                assert row[col] == pytest.approx(want[col])
            assert row["likelihood"] == want["likelihood"]
            assert bool(row["valid_density"]) is want["valid_density"]
    assert df.loc[df["model"] == "vae_bernoulli", "log_sigma"].isna().all()


def _strict_json(text: str):
    """json.loads that rejects NaN / Infinity (what allow_nan=False would have refused to write)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=refuse)


def test_metrics_json_is_strict_sorted_and_structured(report):
    root, _ = report
    text = (root / REPORT_METRICS).read_text()
    metrics = _strict_json(text)
    assert set(metrics) == {"models", "comparisons", "flags"}
    json.dumps(metrics, allow_nan=False)
    assert text == json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n"  # deterministic
    assert set(metrics["models"]) == {DATASET} and set(metrics["models"][DATASET]) == set(MODELS)
    assert set(metrics["flags"]) == {"rules", "lk_not_converged", "geco_not_settled", "classifier_accuracy_low",
                                     "learned_sigma_not_converged", "collapsed_posterior",
                                     "fid_floor"}


@pytest.mark.pipeline
def test_metrics_json_mean_std_ci_match_numpy_and_scipy(report):
    root, _ = report
    agg = json.loads((root / REPORT_METRICS).read_text())["models"]
    for m in MODELS:
        for key in ("test_elbo_nats", "test_nll_iwae_nats", "bits_per_dim", "fid_classifier", "train_seconds",
                    "latent_mutual_info_nats", "active_units"):
            values = np.array([_metrics(m, s)[key] for s in SEEDS], dtype=float)
            got = agg[DATASET][m][key]
            lo, hi = scipy.stats.t.interval(0.95, df=len(SEEDS) - 1, loc=values.mean(), scale=scipy.stats.sem(values))
            assert got == pytest.approx({"mean": values.mean(), "std": values.std(ddof=1),
                                         "se": values.std(ddof=1) / math.sqrt(len(SEEDS)),
                                         "ci_low": lo, "ci_high": hi, "n_seeds": 3}, rel=1e-12), (m, key)
        # ids, settings, booleans, lists, dicts and all-null fields are never aggregated
        for key in ("seed", "latent_dim", "n_images", "iwae_k", "lk_tolerance_nats", "latent_n", "fid_n",
                    "fid_seeds", "fid_floor_n", "latent_log_n_nats", "epochs", "classifier_epochs",
                    "classifier_feature_dim", "valid_density", "lk_converged", "objective_params", "cell",
                    "likelihood_params", "fid_classifier_per_seed", "classifier_val_accuracy", "mlflow_run_id"):
            assert key not in agg[DATASET][m], key
    assert "log_sigma" in agg[DATASET]["sigma_vae"] and "test_nll_iwae_discretised_nats" in agg[DATASET]["sigma_vae"]
    assert "log_sigma" not in agg[DATASET]["vae_bernoulli"]  # no value at all -> omitted
    assert "lambda" in agg[DATASET]["geco"] and "lambda" not in agg[DATASET]["sigma_vae"]


def test_single_seed_has_no_spread_and_nonfinite_values_are_left_out():
    recs = [_metrics("sigma_vae", 0)]
    agg = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]
    assert agg["test_elbo_nats"] == {"mean": recs[0]["test_elbo_nats"], "std": None, "se": None, "ci_low": None,
                                     "ci_high": None, "n_seeds": 1}
    recs = [_metrics("sigma_vae", 0), {**_metrics("sigma_vae", 1), "fid_classifier": float("nan")}]
    fid = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]["fid_classifier"]
    assert fid == {"mean": recs[0]["fid_classifier"], "std": None, "se": None, "ci_low": None, "ci_high": None,
                   "n_seeds": 1, "n_excluded": 1}
    recs = [{**_metrics("sigma_vae", s), "fid_classifier": float("inf")} for s in (0, 1)]
    fid = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]["fid_classifier"]
    assert fid["mean"] is None and fid["n_seeds"] == 0 and fid["n_excluded"] == 2


# ------------------------------------------------------------------------------------------------
# Paired comparisons

def _rows(metrics: dict, a: str, b: str) -> dict[str, dict]:
    return {r["metric"]: r for r in metrics["comparisons"] if (r["model_a"], r["model_b"]) == (a, b)}


def test_pairs_are_the_models_that_differ_in_one_axis(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    pairs = list(dict.fromkeys((r["model_a"], r["model_b"], r["axis"]) for r in metrics["comparisons"]))
    assert pairs == [  # study order; geco differs from vae_bernoulli / per_image / vae_gaussian in two axes
        ("vae_bernoulli", "sigma_vae", "likelihood"), ("vae_bernoulli", "sigma_vae_per_image", "likelihood"),
        ("vae_bernoulli", "vae_gaussian", "likelihood"), ("sigma_vae", "sigma_vae_per_image", "likelihood"),
        ("sigma_vae", "vae_gaussian", "likelihood"), ("sigma_vae", "geco", "objective"),
        ("sigma_vae_per_image", "vae_gaussian", "likelihood")]
    row = _rows(metrics, "sigma_vae", "geco")["nll"]
    assert row["value_a"] == "elbo (beta = 1.0)" and row["value_b"] == (
        "geco (alpha = 0.99, constraint = sse, kappa = 4.0, lambda_init = 1.0, lambda_lr = 0.0001)")
    assert row["other_differences"] == [f"train.lr: {SIGMA_LR} vs 0.001"]   # reported, not an axis
    row = _rows(metrics, "sigma_vae", "vae_gaussian")["fid"]
    assert (row["value_a"], row["value_b"]) == ("gaussian_learned_shared (log_sigma_min = -6.0)",
                                                "gaussian_fixed (sigma = 1.0)")


def test_per_image_comparison_in_the_report_matches_numpy(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    rows = _rows(metrics, "sigma_vae", "vae_gaussian")
    assert [m for m in rows] == ["nll", "elbo", "nll_discretised", "fid"]
    columns = (("nll", "L_k", -1.0), ("elbo", "elbo", 1.0), ("nll_discretised", "L_k_discretised", -1.0))
    for metric, key, sign in columns:
        deltas = [sign * (_per_image("sigma_vae", s)[key] - _per_image("vae_gaussian", s)[key]) for s in SEEDS]
        d = np.array([x.mean() for x in deltas])
        se_images = scipy.stats.sem(np.mean(deltas, axis=0))
        r = rows[metric]
        se_seeds = d.std(ddof=1) / math.sqrt(3)
        se = math.hypot(se_seeds, se_images)
        df = se ** 4 / (se_seeds ** 4 / 2 + se_images ** 4 / (N_IMAGES - 1))
        ci = scipy.stats.t.interval(0.95, df, loc=d.mean(), scale=se)
        assert r["compared"] and r["seeds"] == SEEDS and r["n_seeds"] == 3 and r["n_images"] == N_IMAGES
        assert r["diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert r["se_seeds"] == pytest.approx(se_seeds, rel=1e-12)
        assert r["se_images"] == pytest.approx(se_images, rel=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(ci, rel=1e-9)
    # sigma_vae's NLL is 50 nats lower, far outside the noise; vae_gaussian's L_k is flagged (gap 1.5 > 1)
    assert rows["nll"]["verdict"] == "A better" and rows["nll"]["better"] == "sigma_vae"
    assert rows["nll"]["lk_not_converged"] == ["vae_gaussian"]
    assert rows["elbo"]["lk_not_converged"] == []          # the ELBO does not depend on L_k
    assert rows["nll_discretised"]["lk_not_converged"] == []  # discretised gaps are 0.2


def test_fid_comparison_is_paired_over_seeds(report):
    root, _ = report
    row = _rows(json.loads((root / REPORT_METRICS).read_text()), "sigma_vae", "geco")["fid"]
    a = np.array([_metrics("sigma_vae", s)["fid_classifier"] for s in SEEDS])
    b = np.array([_metrics("geco", s)["fid_classifier"] for s in SEEDS])
    ci = scipy.stats.ttest_1samp(a - b, 0.0).confidence_interval(0.95)
    assert row["diff"] == pytest.approx(np.mean(a - b)) and row["se_images"] is None and row["n_images"] is None
    assert row["diff"] == pytest.approx(3.0, abs=0.1)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["verdict"] == "B better" and row["better"] == "geco"   # lower FID


def test_known_difference_gets_the_right_diff_se_and_verdict():
    """A's per-image NLL = B's - 2 exactly, plus noise of sd 0.5 per image: diff -2 inside its SE."""
    rng = np.random.RandomState(0)
    cells_a, cells_b, noise = {}, {}, {}
    for s in range(5):
        pb = _per_image("sigma_vae", s)
        noise[s] = rng.normal(0.0, 0.5, N_IMAGES)
        pa = {**pb, "L_k": pb["L_k"] + 2.0 + noise[s], "L_k10": pb["L_k10"] + 2.0 + noise[s]}
        cells_a[s] = _cell_data("sigma_vae", s, per_image=pa)
        cells_b[s] = _cell_data("vae_gaussian", s, per_image=pb)
    row = {r["metric"]: r for r in compare_pair(DATASET, "sigma_vae", "vae_gaussian", "likelihood", cells_a,
                                                 cells_b)}["nll"]
    d = np.array([-(2.0 + noise[s]).mean() for s in range(5)])
    assert row["diff"] == pytest.approx(d.mean(), rel=1e-12)
    assert abs(row["diff"] + 2.0) < 3 * row["se"]                  # the constructed difference, within noise
    assert row["se_seeds"] == pytest.approx(d.std(ddof=1) / math.sqrt(5), rel=1e-12)
    assert row["se_images"] == pytest.approx(scipy.stats.sem(np.mean([noise[s] for s in range(5)], axis=0)),
                                             rel=1e-12)
    se = math.hypot(row["se_seeds"], row["se_images"])
    df = se ** 4 / (row["se_seeds"] ** 4 / 4 + row["se_images"] ** 4 / (N_IMAGES - 1))
    half = scipy.stats.t.ppf(0.975, df) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    assert row["verdict"] == "A better" and row["better"] == "sigma_vae" and row["n_seeds"] == 5


def test_identical_models_are_inconclusive():
    cells = {s: _cell_data("sigma_vae", s) for s in SEEDS}
    same_fid = {s: {**_metrics("vae_gaussian", s), "fid_classifier": _metrics("sigma_vae", s)["fid_classifier"]}
                for s in SEEDS}
    twin = {s: _cell_data("vae_gaussian", s, per_image=_per_image("sigma_vae", s), record=same_fid[s]) for s in SEEDS}
    rows = compare_pair(DATASET, "sigma_vae", "vae_gaussian", "likelihood", cells, twin)
    assert [r["metric"] for r in rows] == ["nll", "elbo", "nll_discretised", "fid"]
    for r in rows:
        assert r["compared"] and r["diff"] == 0.0 and r["verdict"] == "inconclusive" and r["better"] is None


def test_seeds_are_paired_by_value():
    """Only the seeds both models have are compared, seed s of A with seed s of B."""
    cells_a = {s: _cell_data("sigma_vae", s) for s in (0, 1, 2)}
    cells_b = {s: _cell_data("geco", s) for s in (1, 2)}
    rows = {r["metric"]: r for r in compare_pair(DATASET, "sigma_vae", "geco", "objective", cells_a, cells_b)}
    want = [float((_per_image("geco", s)["L_k"] - _per_image("sigma_vae", s)["L_k"]).mean()) for s in (1, 2)]
    assert rows["nll"]["seeds"] == [1, 2] and rows["nll"]["diff_per_seed"] == pytest.approx(want)


def test_pairs_across_data_spaces_or_invalid_densities_are_skipped_with_the_reason(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    rows = _rows(metrics, "vae_bernoulli", "sigma_vae")
    assert not rows["nll"]["compared"] and not rows["elbo"]["compared"]
    assert rows["nll"]["verdict"] == "not compared" and rows["nll"]["diff"] is None
    assert rows["nll"]["reason"] == ("different data spaces: vae_bernoulli is a likelihood of binarised images, "
                                     "sigma_vae a density of dequantised 8-bit images; compare them on KL and FID "
                                     "(a likelihood of binarised images compares with no likelihood of the grey "
                                     "levels)")
    assert "nll_discretised" not in rows          # a Bernoulli decoder has no discrete 8-bit column
    assert rows["fid"]["compared"]                # FID compares every pair
    rows = _rows(metrics, "sigma_vae", "sigma_vae_per_image")
    for metric in ("nll", "elbo", "nll_discretised"):
        assert not rows[metric]["compared"]
        assert rows[metric]["reason"] == "not a normalised density: sigma_vae_per_image (valid_density = false)"
    assert rows["fid"]["compared"]
    both = _rows(metrics, "vae_bernoulli", "sigma_vae_per_image")["nll"]["reason"]
    assert "not a normalised density" in both and "different data spaces" in both


def test_per_image_sigma_model_is_in_no_likelihood_comparison(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    likelihood_rows = [r for r in metrics["comparisons"] if r["metric"] in LIKELIHOOD_METRICS and r["compared"]]
    assert likelihood_rows  # sigma_vae vs vae_gaussian and sigma_vae vs geco are
    assert all("sigma_vae_per_image" not in (r["model_a"], r["model_b"]) for r in likelihood_rows)
    for path in (REPORT_MD, REPORT_HTML):
        text = (root / path).read_text()
        table = text[text.index("Paired comparisons (models"):text.index("Not compared, with the reason")]
        lines = [ln for ln in re.split(r"\n|<tr>", table) if "sigma_vae_per_image" in ln]
        assert lines and all("FID (classifier features)" in ln for ln in lines), path


def test_a_discrete_decoder_is_compared_with_the_discretised_gaussian():
    """A categorical decoder (data space 'discrete') and a Gaussian one differ in data space for -L_k, but
    both give a discrete likelihood of the 8-bit images: its -L_k against the Gaussian's -L_k_discretised."""
    cat = {s: _cell_data("vae_categorical", s, record={**_metrics("vae_bernoulli", s), "model": "vae_categorical",
                                                      "likelihood": "categorical", "data_space": "discrete"})
           for s in SEEDS}
    sig = {s: _cell_data("sigma_vae", s) for s in SEEDS}
    rows = {r["metric"]: r for r in compare_pair(DATASET, "vae_categorical", "sigma_vae", "likelihood", cat, sig)}
    assert rows["nll"]["reason"] == ("different data spaces: vae_categorical is a discrete likelihood of 8-bit "
                                     "images, sigma_vae a density of dequantised 8-bit images; compare them on the "
                                     "8-bit discrete likelihood (nll_discretised), KL and FID")
    want = [float((-_per_image("vae_categorical", s)["L_k"] + _per_image("sigma_vae", s)["L_k_discretised"]).mean())
            for s in SEEDS]
    assert rows["nll_discretised"]["compared"]
    assert rows["nll_discretised"]["diff_per_seed"] == pytest.approx(want, rel=1e-12)


def test_different_test_images_raise_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study()
    other = paths.cell_paths(STUDY, DATASET, "vae_gaussian", 1)["per_image"]
    _write_npz(other, {**_per_image("vae_gaussian", 1), "index": INDEX + 1})
    with pytest.raises(ValueError, match="different test images"):
        build_report(_study())
    assert _no_report_written()


# ------------------------------------------------------------------------------------------------
# Flags

def test_lk_flag_follows_the_mean_gap_over_seeds():
    """Flagged exactly when the mean over seeds of the per-image mean gap exceeds the tolerance: not when one
    seed alone exceeds it, and yes when one seed alone is below it."""
    def cells(gaps):
        out = []
        for s, g in enumerate(gaps):
            pi = _per_image("sigma_vae", s)
            out.append(_cell_data("sigma_vae", s, per_image={**pi, "L_k10": pi["L_k"] - g}))
        return out
    for gaps, flagged in (([1.4, 0.2, 0.9], False), ([0.5, 1.5, 1.2], True), ([0.99, 0.99, 0.99], False),
                          ([1.01, 1.01, 1.01], True)):
        entry = lk_status(cells(gaps), [DATASET], ["sigma_vae"])[0]
        assert entry["column"] == "L_k" and entry["gap_nats"] == pytest.approx(np.mean(gaps))
        assert entry["converged"] is (not flagged), gaps
        assert entry["tolerance_nats"] == LK_TOL and entry["iwae_k"] == IWAE_K
    entry = lk_status(cells([0.5, 1.5, 1.2]), [DATASET], ["sigma_vae"])[1]
    assert entry["column"] == "L_k_discretised" and entry["converged"]   # its own gap, 0.2


def test_lk_flag_in_the_report(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    flagged = metrics["flags"]["lk_not_converged"]
    assert [(e["model"], e["column"]) for e in flagged] == [("vae_gaussian", "L_k")]
    e = flagged[0]
    gaps = [float((_per_image("vae_gaussian", s)["L_k"] - _per_image("vae_gaussian", s)["L_k10"]).mean())
            for s in SEEDS]
    assert e["gap_nats"] == pytest.approx(np.mean(gaps)) and e["gap_se_seeds"] == pytest.approx(scipy.stats.sem(gaps))
    md = (root / REPORT_MD).read_text()
    flags = md[md.index("### Flags"):md.index("### Comparison with published numbers")]
    assert "vae_gaussian (L_k): L_k - L_{k/10} = 1.5" in flags and f"k = {IWAE_K}" in flags
    assert "sigma_vae (L_k)" not in flags
    results = md[md.index("Results (test set): 8-bit"):md.index("### Latent analysis")]
    assert results.count("NOT CONVERGED") == 1


def _geco_cell(c_ma: float, trace: list[float], seed: int = 0) -> CellData:
    log = _log("geco", seed)
    log = log.iloc[: len(trace)].copy()
    log["lambda"] = trace
    record = {**_metrics("geco", seed), "geco_constraint_ma": c_ma, "lambda": trace[-1]}
    return _cell_data("geco", seed, record=record, log=log)


def test_geco_flag_follows_the_rule():
    threshold = 0.1 * KAPPA ** 2
    cases = [  # (C_ma, lambda trace, state)
        (threshold * 0.99, [2.0, 2.0 * 1.049], "settled"),
        (-threshold * 0.99, [2.0, 2.0 / 1.049], "settled"),
        (threshold * 1.01, [2.0, 2.0], "not met"),          # the reconstruction target is not reached
        (-threshold * 1.01, [2.0, 2.0], "inactive"),        # over-satisfied: the constraint does not bind
        (-threshold * 1.01, [2.0, 2.0 / 1.5], "inactive"),  # ... and lambda falls towards 0: not "moving"
        (0.0, [2.0, 2.0 * 1.051], "moving"),                # lambda still moving
        (0.0, [1.0 * 1.04], "settled"),                     # one epoch: against lambda_init = 1
        (0.0, [1.0 * 1.06], "moving"),
    ]
    for c_ma, trace, state in cases:
        (entry,) = geco_status([_geco_cell(c_ma, trace)])
        assert entry["state"] == state and entry["settled"] is (state == "settled"), (c_ma, trace, entry["reasons"])
        assert entry["c_ma_threshold"] == pytest.approx(threshold) and entry["lambda"] == trace[-1]
        assert entry["lambda_previous"] == (trace[-2] if len(trace) > 1 else 1.0)
    nll = _geco_cell(0.5, [2.0, 2.0])
    nll.record["objective_params"] = {**GECO_PARAMS, "constraint": "nll", "kappa": 4.0}
    assert geco_status([nll])[0]["c_ma_threshold"] == pytest.approx(0.4) and not geco_status([nll])[0]["settled"]
    assert geco_status([_cell_data("sigma_vae", 0)]) == []   # no lambda: not a GECO model


def test_geco_and_classifier_flags_in_the_report(report):
    root, _ = report
    metrics = json.loads((root / REPORT_METRICS).read_text())
    geco = metrics["flags"]["geco_not_settled"]
    assert [(e["model"], e["seed"]) for e in geco] == [("geco", 1), ("geco", 2)]
    assert geco[0]["state"] == "inactive"
    assert "C_ma = -2 < -0.1 kappa^2 = -1.6" in geco[0]["reasons"][0] and "does not bind" in geco[0]["reasons"][0]
    assert geco[1]["lambda_change"] == pytest.approx(0.1) and "lambda changed by 10.0%" in geco[1]["reasons"][0]
    assert metrics["flags"]["classifier_accuracy_low"] == [
        {"dataset": DATASET, "test_accuracy": 0.9876, "threshold": 0.99, "ok": False}]
    assert metrics["flags"]["fid_floor"] == [{"dataset": DATASET, "floor": FID_FLOOR, "floor_n": FID_N, "fid_n": FID_N,
                                              "blurred": None, "noise": None}]
    for path in (REPORT_MD, REPORT_HTML):
        text = (root / path).read_text()
        flags = text[text.index("Flags"):text.index("Comparison with published numbers")]
        assert "0.1 kappa^2 (constraint sse" in flags and "inactive" in flags     # the rule is stated
        assert "test accuracy 0.9876 &lt; 0.99" in flags or "test accuracy 0.9876 < 0.99" in flags
        assert "FID floor: 2.50" in flags


# ------------------------------------------------------------------------------------------------
# HTML and Markdown

def test_html_is_self_contained_and_escaped(report):
    root, result = report
    text = (root / REPORT_HTML).read_text()
    for m in MODELS:
        assert m in text
    # the pictures (but the optional ones, which this study has no data for) and the validation curves
    assert text.count("data:image/png;base64,") == 1 + len([p for p, _ in PICTURES if p not in OPTIONAL_PICTURES])
    assert not re.search(r'src="(?!data:)', text)  # every image embedded
    assert "<link" not in text and "<script" not in text
    assert "border-collapse" in text  # the CSS is inline
    # sigma_vae's published -ELBO is printed "<-896.1": escaped by the autoescape
    assert "&lt;-896.1" in text and "<-896.1" not in text


def test_markdown_references_existing_figures(report):
    root, result = report
    md_path = root / REPORT_MD
    refs = re.findall(r"\]\((figures/[^)]+)\)", md_path.read_text())
    assert refs
    for ref in refs:
        assert (md_path.parent / ref).is_file(), ref
    fig_names = {Path(r).name for r in refs}
    assert f"{DATASET}_validation_curves.png" in fig_names
    assert result["figures"] and all(Path(root, p).is_file() for p in result["figures"])
    assert len(result["figures"]) == 2 + 2 * len(MODELS) * len(SEEDS) + 6   # + the 6 per-dataset pictures


def test_out_dir_places_files_at_the_same_relative_paths(report, tmp_path, monkeypatch):
    root, _ = report
    monkeypatch.chdir(root)
    out = tmp_path / "elsewhere"
    result = build_report(_study(), out_dir=out)
    for key in ("summary_csv", "metrics_json", "index_html", "index_md"):
        assert Path(result[key]) == output_paths(out)[key]
        assert Path(result[key]).is_file()
    assert Path(result["index_md"]).parent == out
    assert all(Path(p).parent == out / "figures" for p in result["figures"])
    # same numbers whatever the destination
    assert json.loads(Path(result["metrics_json"]).read_text()) == json.loads((root / REPORT_METRICS).read_text())


# ------------------------------------------------------------------------------------------------
# Content read from fields

def test_protocol_is_built_from_the_cell_records(report):
    root, _ = report
    for path in (REPORT_HTML, REPORT_MD):
        protocol = _protocol((root / path).read_text(), "Protocol")
        assert f"k = {IWAE_K}" in protocol and f"evaluate.iwae_k = {IWAE_K}" in protocol
        assert f"same {N_IMAGES} test images (evaluate.n_images = {N_IMAGES})" in protocol
        assert "elbo_n" not in protocol and "iwae_n" not in protocol
        assert f"evaluate.lk_tolerance_nats = {LK_TOL:g}" in protocol and "L_k - L_{k/10}" in protocol
        assert f"first {LATENT_N} of the test images (evaluate.latent_n = {LATENT_N})" in protocol
        assert f"N = {FID_N}" in protocol and f"evaluate.fid_n = {FID_N}" in protocol
        assert f"evaluate.fid_seeds = {FID_SEEDS}" in protocol and "statistics of the whole test split" in protocol
        assert "decoder means" in protocol and "draws" in protocol
        assert "95% CI" in protocol and "Student t" in protocol
        assert f"{GRID_N} images per grid" in protocol
        assert f"evaluate.seed = {EVAL_SEED}" in protocol
        assert "3 epoch(s), batch size 64, learning rate 0.001" in protocol
        assert f"sigma_vae: train.lr = {SIGMA_LR} (others: 0.001)" in protocol  # the per-model difference
        assert "vae_bernoulli: train.lr" not in protocol
        assert f"last {N_VALIDATION} images" in protocol and "max_train = 5000, max_test = 500" in protocol
        assert "max_validation" not in protocol.split("Data (")[1].split("\n")[0]  # null cap not stated
        assert "test accuracy 0.9876" in protocol and "feature dimension 128" in protocol
        assert "2 epoch(s)" in protocol
        assert "validation accuracy" not in protocol  # null in the metrics files


def test_bits_per_dim_convention_follows_the_data_space(report):
    root, _ = report
    md = (root / REPORT_MD).read_text()
    protocol = _protocol(md, "## Protocol")
    items = {line.split("'")[1]: line for line in protocol.splitlines()
             if line.startswith("- '") and "' decoders (" in line}
    assert set(items) == {"bernoulli", "gaussian_learned_shared", "gaussian_optimal_per_image", "gaussian_fixed"}
    assert "(NLL + D ln 256) / (D ln 2)" in items["gaussian_learned_shared"]
    assert "(NLL + D ln 256) / (D ln 2)" not in items["bernoulli"]
    assert "likelihood of the binarised images" in items["bernoulli"]
    assert "(sigma_vae_per_image)" in items["gaussian_optimal_per_image"]


def test_convention_is_read_from_fields_not_names():
    """A likelihood whose name says nothing gets the convention of its data_space."""
    recs = [{**_metrics("vae_bernoulli", 0), "likelihood": "mystery", "data_space": "discrete",
             "likelihood_family": "categorical"},
            {**_metrics("sigma_vae", 0), "likelihood": "gaussian_optimal_shared_lookalike", "valid_density": False,
             "sigma_mode": "fixed"}]
    items = likelihood_items(summary_frame(recs, include_cell=True))
    mystery = [i for i in items if i.startswith("'mystery'")]
    assert len(mystery) == 1 and "exact discrete likelihood" in mystery[0]
    assert not any("Optimal sigma" in i for i in items)  # sigma_mode, not the name, decides
    assert any("not a normalised density" in i and "lookalike" in i for i in items)


def test_only_the_invalid_density_model_gets_the_note(report):
    root, _ = report
    for path in (REPORT_MD, REPORT_HTML):
        text = (root / path).read_text()
        lines = [ln for ln in re.split(r"\n|<li>|<p>|<tr>", text) if "not a normalised density" in ln.lower()]
        assert len(lines) >= 3, path  # its row of the results table, the note under it, the protocol
        for ln in lines:
            assert "sigma_vae_per_image" in ln
        for m in MODELS:   # the label sits on the invalid model only
            assert (f"{m} (not a normalised density)" in text) is (m == "sigma_vae_per_image"), m
        # every reason names the invalid model only
        assert set(re.findall(r"not a normalised density: ([\w, ]+) \(valid_density", text)) == {"sigma_vae_per_image"}
        start = text.index("Results (test set): 8-bit")
        results = text[start:text.index("Latent analysis", start)]
        assert "sigma_vae_per_image (not a normalised density)" in results
        assert "left out of every likelihood comparison" in results


def test_results_tables_are_split_by_data_space(report):
    """A binarised-data number never shares a column with an 8-bit one; the Gaussian table has both the
    dequantisation bound and the discretised likelihood with their bits/dim."""
    root, _ = report
    md = (root / REPORT_MD).read_text()
    binarised = md[md.index("### Results (test set): binarised"):md.index("### Results (test set): 8-bit")]
    gaussian = md[md.index("### Results (test set): 8-bit"):md.index("### Latent analysis")]
    def rows(section: str) -> list[str]:   # the table's body lines
        return [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [ln.split(" | ")[0][2:] for ln in rows(binarised)] == ["vae_bernoulli"]
    assert [ln.split(" | ")[0][2:] for ln in rows(gaussian)] == [
        "sigma_vae", "sigma_vae_per_image (not a normalised density)", "vae_gaussian", "geco"]
    header = gaussian.splitlines()[[i for i, ln in enumerate(gaussian.splitlines()) if ln.startswith("| model")][0]]
    for col in ("dequantised density", "discretised NLL = -L_k", "discretised bits/dim", "| bits/dim |",
                "L_k - L_{k/10}", "95% CI"):
        assert col in header, col
    assert "discretised" not in binarised
    nll = np.array([_metrics("vae_bernoulli", s)["test_nll_iwae_nats"] for s in SEEDS])
    half = scipy.stats.t.ppf(0.975, len(SEEDS) - 1) * nll.std(ddof=1) / math.sqrt(len(SEEDS))
    assert f"{nll.mean():.2f} ± {half:.2f} |" in binarised   # mean ± half-width of the 95% t interval


def test_latent_fid_and_training_tables(report):
    root, _ = report
    md = (root / REPORT_MD).read_text()
    latent = md[md.index("### Latent analysis"):md.index("### FID")]
    assert f"{math.log(LATENT_N):.2f} ({LATENT_N})" in latent and "active units" in latent
    fid = md[md.index("### FID"):md.index("### Training: effective beta")]
    assert f"{FID_FLOOR:.2f} ({FID_N})" in fid and "draws" in fid and f"({FID_SEEDS})" in fid
    training = md[md.index("### Training: effective beta"):md.index("### Paired comparisons")]
    assert "2 sigma^2 beta" in training and "1/lambda" in training
    geco_row = [ln for ln in training.splitlines() if ln.startswith("| geco |")][0]
    assert "1/lambda (GECO" in geco_row


def test_validation_curves_grouped_by_likelihood_family():
    records = [_metrics(m, s) for m in MODELS for s in SEEDS]
    assert likelihood_groups(records, DATASET, MODELS) == {
        "bernoulli": ["vae_bernoulli"], "gaussian": ["sigma_vae", "sigma_vae_per_image", "vae_gaussian", "geco"]}


def test_published_comparison_rows_for_models_in_study(report):
    root, _ = report
    md = (root / REPORT_MD).read_text()
    section = md[md.index("Comparison with published numbers"):md.index("## Protocol")]
    # IWAE Table 1, VAE 1 layer k = 1 (vae_bernoulli's objective has no k) and SVAE Table 3 FIDs
    assert "86.76" in section and "86.47" not in section
    assert "32.22" in section and "32.18" in section and "<-896.1" in section
    assert "beta_vae" not in section and "53.23" not in section  # not in the study -> not shown
    assert "sigma_vae_per_image" not in section  # published only on SVHN
    # ours next to it: the mean of -L_k over the seeds, and our protocol from the new fields
    mean_nll = np.mean([_metrics("vae_bernoulli", s)["test_nll_iwae_nats"] for s in SEEDS])
    assert f"{mean_nll:.2f}" in section
    assert f"-L_k with k = {IWAE_K} on {N_IMAGES} fixed random test images" in section
    assert "IWAE: Burda" in section  # the source is spelled out


def test_published_rows_use_the_training_k_of_objective_params():
    recs = [_metrics("iwae", s, objective_params={"k": 5}) for s in SEEDS]
    frame = summary_frame(recs, include_cell=True)
    table = comparison_table(DATASET, ["iwae"], aggregate_over_seeds(recs), frame)
    assert list(table["published"]) == ["85.54"]
    recs = [_metrics("iwae", s, objective_params={"k": 7}) for s in SEEDS]  # no published k = 7: all rows
    table = comparison_table(DATASET, ["iwae"], aggregate_over_seeds(recs), summary_frame(recs, include_cell=True))
    assert sorted(table["published"]) == ["84.78", "85.54", "86.76"]


def test_published_entries_filter_by_training_k():
    rows = published.entries_for("MNIST", ["iwae"], {"iwae": 5})
    assert [r["value"] for r in rows if r["metric"] == "nll_nats"] == [85.54]
    rows = published.entries_for("mnist", ["iwae"], {"iwae": 7})  # no match: all k shown
    assert len([r for r in rows if r["metric"] == "nll_nats"]) == 3


# ------------------------------------------------------------------------------------------------
# Errors: raised before anything is written

def test_missing_cell_file_raises_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study()
    missing = paths.cell_paths(STUDY, DATASET, "sigma_vae", 1)["train_log"]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(_study())
    assert _no_report_written()


@pytest.mark.parametrize("role", ["metrics", "per_image", "samples_png", "recon_png"])
def test_any_missing_input_is_named(tmp_path, monkeypatch, role):
    monkeypatch.chdir(tmp_path)
    _write_study()
    missing = paths.cell_paths(STUDY, DATASET, "sigma_vae_per_image", 0)[role]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(_study())
    assert _no_report_written()


def test_metrics_of_another_cell_raises_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study()
    wrong = paths.cell_paths(STUDY, DATASET, "sigma_vae", 1)["metrics"]
    write_json(wrong, _metrics("sigma_vae", 0))  # seed 0's numbers at seed 1's place
    with pytest.raises(ValueError, match=re.escape(str(wrong))):
        build_report(_study())
    assert _no_report_written()
    write_json(wrong, _metrics("vae_bernoulli", 1))  # another model
    with pytest.raises(ValueError, match="expected"):
        build_report(_study())
    assert _no_report_written()


def test_metrics_without_structured_fields_raise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study()
    old = paths.cell_paths(STUDY, DATASET, "vae_bernoulli", 0)["metrics"]
    rec = _metrics("vae_bernoulli", 0)
    del rec["likelihood_family"]
    write_json(old, rec)
    with pytest.raises(ValueError, match="likelihood_family"):
        build_report(_study())
    assert _no_report_written()


@pytest.mark.parametrize("change, message", [
    (lambda a: {k: v for k, v in a.items() if k != "L_k"}, "lacks the array"),
    (lambda a: {**a, "elbo": a["elbo"][:-1]}, "one value per test image"),
    (lambda a: {**a, "index": a["index"][:-1], **{k: v[:-1] for k, v in a.items() if k != "index"}},
     f"holds {N_IMAGES - 1} images but the metrics file says n_images = {N_IMAGES}"),
])
def test_invalid_per_image_file_raises_and_writes_nothing(tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    _write_study()
    bad = paths.cell_paths(STUDY, DATASET, "geco", 2)["per_image"]
    _write_npz(bad, change(_per_image("geco", 2)))
    with pytest.raises(ValueError, match=re.escape(message)):
        build_report(_study())
    assert _no_report_written()


def test_comparisons_need_no_files():
    """paired_comparisons and diagnose work on in-memory cells (what build_report hands them)."""
    inputs = [_cell_data(m, s) for m in MODELS for s in SEEDS]
    diag = diagnose(inputs, [DATASET], MODELS)
    rows = paired_comparisons(inputs, [DATASET], MODELS, diag)
    assert {(r["model_a"], r["model_b"]) for r in rows} >= {("sigma_vae", "geco"), ("sigma_vae", "vae_gaussian")}
    assert paired_comparisons(inputs, [DATASET], ["vae_bernoulli", "geco"], diag) == []   # two axes apart


# ------------------------------------------------------------------------------------------------
# Package

def test_import_is_light_and_study_interface_matches():
    code = ("import sys, vaebench.report; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from vaebench.config import Study

    for attr in ("name", "dataset_names", "model_names", "seeds", "cells"):
        assert hasattr(Study, attr), attr


def test_templates_ship_inside_the_package():
    import vaebench.report

    folder = Path(vaebench.report.__file__).parent / "templates"
    assert (folder / "index.html.j2").is_file() and (folder / "index.md.j2").is_file()


def test_numbers_that_would_round_to_zero_keep_two_significant_digits():
    from vaebench.report.format import format_ci, num

    assert num(0.123, ".0f") == "0.12" and num(56.3, ".0f") == "56"     # a sub-second training time, a minute
    assert num(0.0, ".0f") == "0" and num(-0.004, ".2f") == "-0.004" and num(float("nan"), ".2f") == "n/a"
    assert format_ci({"mean": 0.21, "ci_low": 0.1, "ci_high": 0.32}, ".0f") == "0.21 ± 0.11"


def test_sigma_and_collapse_flags_are_sentences_in_the_flags_section(report):
    """A learned sigma away from its optimum (or without a test MSE) and a collapsed posterior each get a sentence
    under Flags; a converged sigma and a posterior with active units get none."""
    from vaebench.report.flags import Diagnostics
    from vaebench.report.tables.diagnostics import collapse_flag_items, sigma_flag_items

    def sigma(model, log_sigma, optimum):
        diff = None if optimum is None else log_sigma - optimum
        return {"dataset": "d", "model": model, "seed": 0, "log_sigma": log_sigma, "optimum": optimum,
                "difference": diff, "tolerance": 0.1, "converged": diff is not None and abs(diff) <= 0.1}

    diag = Diagnostics(sigma=[sigma("a", -1.155, -1.870), sigma("b", -2.0, -2.05), sigma("c", -2.0, None)],
                       collapse=[{"dataset": "d", "model": "a", "seed": 0, "active_units": 0, "kl": 0.01,
                                  "collapsed": True},
                                 {"dataset": "d", "model": "b", "seed": 0, "active_units": 3, "kl": 9.0,
                                  "collapsed": False}])
    items = sigma_flag_items("d", diag)
    assert len(items) == 2 and items[0].startswith("a seed 0: log sigma -1.155") and "-1.870" in items[0]
    assert "difference 0.715" in items[0] and items[1].startswith("c seed 0") and "unknown" in items[1]
    assert sigma_flag_items("d", Diagnostics(sigma=[sigma("b", -2.0, -2.05)])) == [
        "Every learned shared sigma is within the tolerance of its optimum, 1/2 log MSE."]
    assert sigma_flag_items("other", diag) == [] and collapse_flag_items("other", diag) == []
    (collapsed,) = collapse_flag_items("d", diag)
    assert collapsed.startswith("a seed 0: 0 active units")

    root, _ = report
    flagged = json.loads((root / REPORT_METRICS).read_text())["flags"]["learned_sigma_not_converged"]
    md = (root / REPORT_MD).read_text()
    flags = md[md.index("### Flags"):md.index("### Comparison with published numbers")]
    assert flagged and "Learned sigma, rule: a learned shared sigma with |log sigma - 1/2 log MSE|" in flags
    for e in flagged:
        assert f"{e['model']} seed {e['seed']}: log sigma" in flags
