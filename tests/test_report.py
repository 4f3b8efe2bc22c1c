"""Report stage on a fake 1 dataset x 3 models x 2 seeds study written at the ``paths`` locations.

The metrics files use the structured fields of the evaluate stage (likelihood_family, data_space,
valid_density, objective_params, the whole ``cell`` record, ...). Values that the report must take from the
cells' configuration records are unusual on purpose, so that finding them in the text means something.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vaebench import paths
from vaebench.atomic import write_json
from vaebench.report import build_report, output_paths
from vaebench.report import published
from vaebench.report.collect import SUMMARY_COLUMNS, aggregate_over_seeds, summary_frame
from vaebench.report.figures import likelihood_groups
from vaebench.report.tables import comparison_table, likelihood_items

DATASET = "mnist"
MODELS = ["vae_bernoulli", "sigma_vae", "sigma_vae_per_image"]
SEEDS = [0, 1]
IWAE_K = 37        # evaluate.iwae_k
IWAE_N = 211       # evaluate.iwae_n
FID_N = 123        # evaluate.fid_n
GRID_N = 23        # evaluate.grid_n (only in the cell records)
EVAL_SEED = 4321   # evaluate.seed (only in the cell records)
N_VALIDATION = 1717
SIGMA_LR = 0.0005  # sigma_vae's own learning rate; the others use 0.001

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
}


@dataclasses.dataclass
class FakeStudy:
    """What build_report reads of a vaebench.config.Study."""

    name: str
    dataset_names: list
    model_names: list
    seeds: list

    def cells(self):
        return [(d, m, s) for d in self.dataset_names for m in self.model_names for s in self.seeds]


def _study(models=MODELS, seeds=SEEDS) -> FakeStudy:
    return FakeStudy("fake", [DATASET], list(models), list(seeds))


def _cell_record(model: str, seed: int, objective_params: dict) -> dict:
    lik, _, _, _, _, lik_params = LIKELIHOODS.get(model, LIKELIHOODS["vae_bernoulli"])
    return {
        "study": "fake", "dataset": DATASET, "model": model, "seed": seed, "device": "auto",
        "model_config": {"description": f"{model} (fake)", "latent_dim": 8,
                         "architecture": {"name": "mlp", "hidden_dims": [64, 32]},
                         "posterior": {"name": "diagonal"}, "likelihood": {"name": lik, **lik_params},
                         "objective": {"name": "elbo", **objective_params}},
        "train": {"epochs": 3, "batch_size": 64, "lr": SIGMA_LR if model == "sigma_vae" else 0.001},
        "evaluate": {"elbo_n": None, "iwae_k": IWAE_K, "iwae_n": IWAE_N, "iwae_chunk": 10, "fid_n": FID_N,
                     "grid_n": GRID_N, "batch_size": 100, "seed": EVAL_SEED},
        "data": {"n_validation": N_VALIDATION, "max_train": 5000, "max_validation": None, "max_test": 500},
    }


def _metrics(model: str, seed: int, objective_params: dict | None = None) -> dict:
    lik, family, sigma_mode, space, valid, lik_params = LIKELIHOODS.get(model, LIKELIHOODS["vae_bernoulli"])
    objective_params = {"beta": 1.0} if objective_params is None else objective_params
    bern = family == "bernoulli"
    base = {"vae_bernoulli": 100.0, "sigma_vae": -700.0}.get(model, -900.0)
    treatment, likelihood_of = DATA_SPACES[space]
    return {
        "study": "fake", "dataset": DATASET, "model": model, "seed": seed,
        "architecture": "mlp", "architecture_params": {"hidden_dims": [64, 32]},
        "architecture_description": "fully connected encoder and decoder", "latent_dim": 8,
        "description": f"{model} (fake)",
        "posterior": "diagonal", "posterior_params": {}, "posterior_description": "diagonal Gaussian",
        "likelihood": lik, "likelihood_family": family, "sigma_mode": sigma_mode, "data_space": space,
        "data_treatment": treatment, "likelihood_of": likelihood_of, "valid_density": valid,
        "likelihood_description": f"{lik} decoder", "likelihood_params": lik_params,
        "objective": "elbo", "objective_params": objective_params, "objective_description": "ELBO",
        "cell": _cell_record(model, seed, objective_params),
        "test_elbo_nats": -(base + 3.0 * seed + 0.25), "test_recon_nats": base + 2.0 * seed,
        "test_kl_nats": 20.0 + seed, "elbo_n_images": 500,
        "test_nll_iwae_nats": base - 5.0 + 1.5 * seed, "iwae_k": IWAE_K, "iwae_n_images": IWAE_N,
        "bits_per_dim": 0.2 + 0.01 * seed if bern else 1.1 + 0.02 * seed,
        "fid_classifier": 10.0 + seed + (0 if bern else 5), "fid_n": FID_N,
        "fid_reference": f"first {FID_N} test images vs {FID_N} prior samples",
        "classifier_test_accuracy": 0.9876, "classifier_val_accuracy": None, "classifier_epochs": 2,
        "classifier_feature_dim": 128,
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
    if model != "vae_bernoulli":
        log["log_sigma"] = [-1.0, -1.5, -2.0 - 0.1 * seed]
        log["effective_beta"] = [0.2, 0.1, 0.02]
    files["train_log"].parent.mkdir(parents=True, exist_ok=True)
    log.to_csv(files["train_log"], index=False)
    _png(files["samples_png"], 0.3)
    _png(files["recon_png"], 0.7)


def _write_study() -> None:
    for m in MODELS:
        for s in SEEDS:
            _write_cell(m, s)


def _no_report_written() -> bool:
    return not any(Path(p).exists() for p in paths.REPORT_OUTPUTS)


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
    assert result["summary_csv"] == str(Path(paths.SUMMARY_CSV))
    df = pd.read_csv(root / paths.SUMMARY_CSV)
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


def test_metrics_json_mean_std_match_numpy(report):
    root, _ = report
    text = (root / paths.REPORT_METRICS).read_text()
    assert "NaN" not in text
    agg = json.loads(text)
    assert set(agg) == {DATASET} and set(agg[DATASET]) == set(MODELS)
    for m in MODELS:
        for key in ("test_elbo_nats", "test_nll_iwae_nats", "bits_per_dim", "fid_classifier", "train_seconds"):
            values = np.array([_metrics(m, s)[key] for s in SEEDS])
            got = agg[DATASET][m][key]
            assert got["mean"] == pytest.approx(values.mean())
            assert got["std"] == pytest.approx(values.std(ddof=1))
            assert got["n_seeds"] == 2
        # ids, settings, booleans, dicts and all-null fields are never aggregated
        for key in ("seed", "latent_dim", "iwae_k", "elbo_n_images", "iwae_n_images", "fid_n", "epochs",
                    "classifier_epochs", "classifier_feature_dim", "valid_density", "objective_params",
                    "cell", "likelihood_params", "classifier_val_accuracy", "lambda", "mlflow_run_id"):
            assert key not in agg[DATASET][m], key
    assert "log_sigma" in agg[DATASET]["sigma_vae"]
    assert "log_sigma" not in agg[DATASET]["vae_bernoulli"]  # no value at all -> omitted


def test_single_seed_std_is_null_and_nonfinite_values_are_left_out():
    recs = [_metrics("sigma_vae", 0)]
    agg = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]
    assert agg["test_elbo_nats"] == {"mean": recs[0]["test_elbo_nats"], "std": None, "n_seeds": 1}
    recs = [_metrics("sigma_vae", 0), {**_metrics("sigma_vae", 1), "fid_classifier": float("nan")}]
    fid = aggregate_over_seeds(recs)["mnist"]["sigma_vae"]["fid_classifier"]
    assert fid == {"mean": recs[0]["fid_classifier"], "std": None, "n_seeds": 1, "n_excluded": 1}


# ------------------------------------------------------------------------------------------------
# HTML and Markdown

def test_html_is_self_contained_and_escaped(report):
    root, result = report
    text = (root / paths.REPORT_HTML).read_text()
    for m in MODELS:
        assert m in text
    assert text.count("data:image/png;base64,") == 2 + 2 * len(MODELS)  # curves, traces, grids of seed 0
    assert not re.search(r'src="(?!data:)', text)  # every image embedded
    assert "<link" not in text and "<script" not in text
    assert "border-collapse" in text  # the CSS is inline
    # sigma_vae's published -ELBO is printed "<-896.1": escaped by the autoescape
    assert "&lt;-896.1" in text and "<-896.1" not in text


def test_markdown_references_existing_figures(report):
    root, result = report
    md_path = root / paths.REPORT_MD
    refs = re.findall(r"\]\((figures/[^)]+)\)", md_path.read_text())
    assert refs
    for ref in refs:
        assert (md_path.parent / ref).is_file(), ref
    fig_names = {Path(r).name for r in refs}
    assert f"{DATASET}_validation_curves.png" in fig_names
    assert f"{DATASET}_log_sigma_lambda.png" in fig_names
    assert result["figures"] and all(Path(root, p).is_file() for p in result["figures"])
    assert len(result["figures"]) == 2 + 2 * len(MODELS) * len(SEEDS)


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
    assert json.loads(Path(result["metrics_json"]).read_text()) == json.loads((root / paths.REPORT_METRICS).read_text())


# ------------------------------------------------------------------------------------------------
# Content read from fields

def test_protocol_is_built_from_the_cell_records(report):
    root, _ = report
    for path in (paths.REPORT_HTML, paths.REPORT_MD):
        protocol = _protocol((root / path).read_text(), "Protocol")
        assert f"k = {IWAE_K}" in protocol and f"evaluate.iwae_k = {IWAE_K}" in protocol
        assert f"evaluate.iwae_n = {IWAE_N}" in protocol and f"first {IWAE_N} test images" in protocol
        assert f"N = {FID_N}" in protocol and f"evaluate.fid_n = {FID_N}" in protocol
        assert "evaluate.elbo_n = null (the whole test split)" in protocol
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
    md = (root / paths.REPORT_MD).read_text()
    protocol = _protocol(md, "## Protocol")
    items = {line.split("'")[1]: line for line in protocol.splitlines()
             if line.startswith("- '") and "' decoders (" in line}
    assert set(items) == {"bernoulli", "gaussian_learned_shared", "gaussian_optimal_per_image"}
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
    for path in (paths.REPORT_MD, paths.REPORT_HTML):
        text = (root / path).read_text()
        lines = [ln for ln in re.split(r"\n|<li>|<p>", text) if "not a normalised density" in ln.lower()]
        assert len(lines) >= 2, path  # under the results table and in the protocol
        for ln in lines:
            assert "sigma_vae_per_image" in ln
            assert "vae_bernoulli" not in ln and "sigma_vae," not in ln and "(sigma_vae)" not in ln
        results = text[text.index("Results (test set)"):text.index("Comparison with published numbers")]
        assert "not a normalised density" in results


def test_validation_curves_grouped_by_likelihood_family():
    records = [_metrics(m, s) for m in MODELS for s in SEEDS]
    assert likelihood_groups(records, DATASET, MODELS) == {
        "bernoulli": ["vae_bernoulli"], "gaussian": ["sigma_vae", "sigma_vae_per_image"]}


def test_published_comparison_rows_for_models_in_study(report):
    root, _ = report
    md = (root / paths.REPORT_MD).read_text()
    section = md[md.index("Comparison with published numbers"):md.index("### Training curves")]
    # IWAE Table 1, VAE 1 layer k = 1 (vae_bernoulli's objective has no k) and SVAE Table 3 FIDs
    assert "86.76" in section and "86.47" not in section
    assert "32.22" in section and "32.18" in section and "<-896.1" in section
    assert "beta_vae" not in section and "53.23" not in section  # not in the study -> not shown
    assert "sigma_vae_per_image" not in section  # published only on SVHN
    # ours next to it: the mean of -L_k over the two seeds
    mean_nll = np.mean([_metrics("vae_bernoulli", s)["test_nll_iwae_nats"] for s in SEEDS])
    assert f"{mean_nll:.2f}" in section
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
    missing = paths.cell_paths(DATASET, "sigma_vae", 1)["train_log"]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(_study())
    assert _no_report_written()


@pytest.mark.parametrize("role", ["metrics", "samples_png", "recon_png"])
def test_any_missing_input_is_named(tmp_path, monkeypatch, role):
    monkeypatch.chdir(tmp_path)
    _write_study()
    missing = paths.cell_paths(DATASET, "sigma_vae_per_image", 0)[role]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_report(_study())
    assert _no_report_written()


def test_metrics_of_another_cell_raises_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study()
    wrong = paths.cell_paths(DATASET, "sigma_vae", 1)["metrics"]
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
    old = paths.cell_paths(DATASET, "vae_bernoulli", 0)["metrics"]
    rec = _metrics("vae_bernoulli", 0)
    del rec["likelihood_family"]
    write_json(old, rec)
    with pytest.raises(ValueError, match="likelihood_family"):
        build_report(_study())
    assert _no_report_written()


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
