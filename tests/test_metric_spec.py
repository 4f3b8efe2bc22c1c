"""The metric spec: one declaration per record field, data space and tracked scalar, read by every consumer.

A toy metric declared here (monkeypatched into the spec) must reach the report's aggregates, summary.csv and
results tables, and its declared direction must decide the paired comparison's verdict, with no other edit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import test_report as fake
from vaebench import paths
from vaebench.atomic import write_json
from vaebench.metrics import spec
from vaebench.report import build_report
from vaebench.report.paired import compare_metric, pair_base

TOY = "toy_sharpness_nats"


def _toy_metric(higher_is_better: bool) -> spec.Metric:
    return spec.Metric(TOY, "toy sharpness (nats/image)", "nats/image", higher_is_better, per_image="toy",
                       compare_as="toy", paired=True, table="latent", column="toy sharpness (nats)", optional=True)


def _toy_values(model: str, seed: int) -> np.ndarray:
    """Per-image toy values: 10 nats per position of the model in the study's order, plus noise."""
    rng = np.random.RandomState(100 + 10 * fake.MODELS.index(model) + seed)
    return 10.0 * fake.MODELS.index(model) + rng.normal(0.0, 0.5, fake.N_IMAGES)


def _declare(monkeypatch, higher_is_better: bool = True) -> None:
    monkeypatch.setitem(spec.FIELDS, TOY, _toy_metric(higher_is_better))


def test_every_declaration_is_well_formed():
    assert len({f.key for f in spec.FIELDS.values()}) == len(spec.FIELDS)
    for m in spec.metrics():
        if m.paired:
            assert m.compare_as, m.key
        if m.table:
            assert m.column, m.key
    assert spec.paired_names()[:2] == ["nll", "elbo"]
    assert list(spec.DATA_SPACES) == ["binarised", "dequantised", "discrete"]
    assert {s.record_key for s in spec.TRACKED.values()} == {"log_sigma", "effective_beta", "lambda",
                                                              "geco_constraint_ma"}
    with pytest.raises(ValueError, match="declared twice"):
        spec.declare(spec.Setting("fid_n", "again"))


def test_settings_are_not_metrics():
    for key in ("fid_n", "iwae_k", "n_images", "latent_n", "lk_tolerance_nats", "fid_seeds"):
        assert spec.FIELDS[key].kind == "setting"
        assert key not in spec.aggregated_keys()
        assert key not in spec.mlflow_keys()                   # logged as a tag, eval.<key>
    for key in ("seed", "latent_dim", "epochs", "cell", "mlflow_run_id"):
        assert spec.FIELDS[key].kind == "descriptive" and key not in spec.mlflow_keys()


def test_build_record_refuses_undeclared_and_missing_fields():
    values = {k: 0 for k, f in spec.FIELDS.items() if not f.optional}
    assert list(spec.build_record(values)) == [k for k in spec.FIELDS if k in values]
    with pytest.raises(KeyError, match="undeclared record field"):
        spec.build_record({**values, "not_declared": 1.0})
    values.pop("test_nll_iwae_nats")
    with pytest.raises(KeyError, match="lacks the declared field"):
        spec.build_record(values)


@pytest.mark.parametrize("model", fake.MODELS)
def test_every_key_of_an_evaluate_record_is_declared(model):
    """The report's fixture records (the evaluate stage's fields, see tests/test_report.py) are all declared;
    tests/test_evaluate.py checks the records of the stage itself."""
    record = fake._metrics(model, 0)
    assert set(record) <= set(spec.FIELDS)


def _write_study_with_toy(root: Path) -> None:
    fake._write_study()
    for m in fake.MODELS:
        for s in fake.SEEDS:
            files = paths.cell_paths(fake.STUDY, fake.DATASET, m, s)
            record = json.loads(files["metrics"].read_text())
            record[TOY] = float(_toy_values(m, s).mean())
            write_json(files["metrics"], record)
            fake._write_npz(files["per_image"], {**fake._per_image(m, s), "toy": _toy_values(m, s)})


def test_a_declared_metric_flows_into_the_report(tmp_path, monkeypatch):
    _declare(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _write_study_with_toy(tmp_path)
    build_report(fake._study())
    models = json.loads(Path(fake.REPORT_METRICS).read_text())["models"][fake.DATASET]
    for m in fake.MODELS:
        want = np.mean([_toy_values(m, s).mean() for s in fake.SEEDS])
        assert models[m][TOY]["mean"] == pytest.approx(want)
        assert models[m][TOY]["n_seeds"] == len(fake.SEEDS)
    summary = pd.read_csv(fake.SUMMARY_CSV)
    assert TOY in summary.columns
    text = Path(fake.REPORT_MD).read_text()
    assert "toy sharpness (nats)" in text                      # a column of the latent table
    comparisons = json.loads(Path(fake.REPORT_METRICS).read_text())["comparisons"]
    toy_rows = [r for r in comparisons if r["metric"] == "toy"]
    assert toy_rows and all(r["compared"] for r in toy_rows)


def test_an_undeclared_field_is_not_aggregated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_study_with_toy(tmp_path)
    build_report(fake._study())
    models = json.loads(Path(fake.REPORT_METRICS).read_text())["models"][fake.DATASET]
    assert all(TOY not in stats for stats in models.values())


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_declared_direction_decides_the_verdict(monkeypatch, higher_is_better):
    """B's toy values are 10 nats above A's: B is better when higher is better, A otherwise."""
    _declare(monkeypatch, higher_is_better)
    a, b = "vae_bernoulli", "sigma_vae"
    cells = {m: {s: fake._cell_data(m, s, per_image={**fake._per_image(m, s), "toy": _toy_values(m, s)})
                 for s in fake.SEEDS} for m in (a, b)}
    row = compare_metric(pair_base(fake.DATASET, a, b, None, cells[a], cells[b]), "toy", cells[a], cells[b])
    assert row["compared"] and row["diff"] < 0
    assert row["higher_is_better"] is higher_is_better
    assert row["better"] == (b if higher_is_better else a)
    assert row["verdict"] == ("B better" if higher_is_better else "A better")
