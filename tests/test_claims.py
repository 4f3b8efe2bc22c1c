"""The seed papers' claims as data (claims.yaml): validation, verdict rules, paired statistics against an
independent computation, pair selection by axis, claims.csv and the README's verdict table."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from vaebench import paths
from vaebench.config import ConfigError, load_catalogue
from vaebench.report import claims, readme
from vaebench.report.collect import CellData

REPO = Path(__file__).resolve().parents[1]
N, SEEDS = 200, [0, 1, 2]


def _record(model: str, seed: int, posterior: str = "diagonal", likelihood: str = "gaussian_optimal_shared",
            objective: str = "elbo", space: str = "dequantised", valid: bool = True, fid: float = 50.0) -> dict:
    return {"dataset": "mnist", "model": model, "seed": seed, "latent_dim": 20, "architecture": "mlp",
            "architecture_params": {}, "posterior": posterior, "posterior_params": {}, "likelihood": likelihood,
            "likelihood_params": {}, "objective": objective, "objective_params": {}, "data_space": space,
            "valid_density": valid, "fid_classifier": fid, "lk_tolerance_nats": 1.0, "iwae_k": 100,
            "active_units": 5, "test_kl_nats": 20.0, "epochs": 5000}


def _cell(model: str, seed: int, shift: float, record: dict) -> CellData:
    """Per-image values: an image difficulty shared by every model and seed (what pairing removes), a model
    shift and per-cell noise."""
    difficulty = np.random.RandomState(0).normal(0.0, 20.0, N)
    noise = np.random.RandomState(sum(map(ord, model)) * 10 + seed).normal(0.0, 1.0, N)
    lk = -(100.0 + difficulty + shift + 0.3 * seed + noise)
    per_image = {"index": np.arange(N), "L_k": lk, "L_k10": lk - 0.1, "elbo": lk - 2.0, "kl": 20.0 + shift + noise,
                 "recon": -lk - 22.0}
    return CellData(("mnist", model, seed), record, pd.DataFrame({"epoch": [1]}), {}, per_image)


def _claims_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    return path


def test_the_repository_claims_name_catalogue_models_only():
    loaded = claims.load_claims(REPO / paths.CLAIMS, set(load_catalogue(REPO / paths.CATALOGUE)))
    assert {"calibrated_decoder_fid", "ar1_posterior_bound", "iwae_beats_vae", "geco_iwae_vs_geco"} <= set(loaded)


@pytest.mark.parametrize("entry, key", [
    ("{a: x, b: y, metrics: {bits: better}}", "claims.c.comparisons.0.metrics.bits"),
    ("{a: x, b: y, metrics: {nll: bigger}}", "claims.c.comparisons.0.metrics.nll"),
    ("{a: x, b: y, metrics: {nll: {equal_within: -1}}}", "claims.c.comparisons.0.metrics.nll"),
    ("{a: x, axis: posterior, a_value: ar1, b_value: diagonal, metrics: {nll: better}}", "claims.c.comparisons.0"),
    ("{axis: decoder, a_value: ar1, b_value: diagonal, metrics: {nll: better}}", "claims.c.comparisons.0.axis"),
    ("{a: x, metrics: {nll: better}}", "claims.c.comparisons.0"),
])
def test_a_bad_entry_names_the_file_and_the_key(tmp_path, entry, key):
    path = _claims_file(tmp_path, f"claims:\n  c:\n    claim: t\n    source: s\n    comparisons:\n      - {entry}\n")
    with pytest.raises(ConfigError) as exc:
        claims.load_claims(path)
    assert str(path) in str(exc.value) and f"'{key}" in str(exc.value)


def test_a_model_outside_the_catalogue_is_an_error(tmp_path):
    path = _claims_file(tmp_path, "claims:\n  c:\n    claim: t\n    source: s\n    comparisons:\n"
                                  "      - {a: iwae, b: vae_bernoulii, metrics: {nll: better}}\n")
    with pytest.raises(ConfigError, match="vae_bernoulii"):
        claims.load_claims(path, {"iwae", "vae_bernoulli"})


def _row(verdict: str, lo: float | None, hi: float | None, compared: bool = True) -> dict:
    return {"compared": compared, "verdict": verdict, "ci_low": lo, "ci_high": hi}


@pytest.mark.parametrize("expectation, row, expected", [
    ("better", _row("A better", -3, -1), claims.REPRODUCED),
    ("better", _row("B better", 1, 3), claims.NOT_REPRODUCED),
    ("worse", _row("B better", 1, 3), claims.REPRODUCED),
    ("worse", _row("A better", -3, -1), claims.NOT_REPRODUCED),
    ("better", _row("inconclusive", -1, 1), claims.INCONCLUSIVE),
    ("better", _row("inconclusive (one seed)", None, None), claims.INCONCLUSIVE),
    ("better", _row("not compared", None, None, compared=False), claims.NOT_TESTED),
    (claims.EqualWithin(equal_within=5), _row("A better", -4, -1), claims.REPRODUCED),
    (claims.EqualWithin(equal_within=5), _row("inconclusive", -3, 6), claims.INCONCLUSIVE),
    (claims.EqualWithin(equal_within=5), _row("B better", 6, 9), claims.NOT_REPRODUCED),
    (claims.EqualWithin(equal_within=5), _row("A better", -9, -6), claims.NOT_REPRODUCED),
    (claims.EqualWithin(equal_within=5), _row("inconclusive (one seed)", None, None), claims.INCONCLUSIVE),
])
def test_verdict_rules(expectation, row, expected):
    assert claims.verdict(expectation, row) == expected


def _study_cells(shifts: dict[str, float], records: dict[str, dict]) -> list[CellData]:
    return [_cell(m, s, shifts[m], {**records[m], "seed": s}) for m in shifts for s in SEEDS]


def test_a_named_claim_matches_an_independent_paired_t_interval(tmp_path):
    """nll of A - B: the mean over seeds and images of the paired differences with a t interval on both error
    sources (SE over seeds from scipy's one-sample t test, SE over images = scipy's sem of the seed-averaged
    differences, Satterthwaite's df), compared with the row; a 1-nat better model at 3 seeds is reproduced."""
    records = {"a": _record("a", 0), "b": _record("b", 0)}
    inputs = _study_cells({"a": -1.0, "b": 0.0}, records)
    path = _claims_file(tmp_path, "claims:\n  c:\n    claim: A beats B\n    source: paper\n    comparisons:\n"
                                  "      - {a: a, b: b, metrics: {nll: better, kl: worse}}\n")
    rows = claims.check_claims(claims.load_claims(path), inputs, ["mnist"], ["a", "b"])
    nll = next(r for r in rows if r["metric"] == "nll")
    cells = {(c.cell[1], c.cell[2]): c for c in inputs}
    delta = np.array([-cells[("a", s)].per_image["L_k"] + cells[("b", s)].per_image["L_k"] for s in SEEDS])
    d = delta.mean(axis=1)
    se_seeds = d.mean() / scipy.stats.ttest_1samp(d, 0.0).statistic
    se_images = scipy.stats.sem(delta.mean(axis=0))
    se = math.hypot(se_seeds, se_images)
    df = se ** 4 / (se_seeds ** 4 / 2 + se_images ** 4 / (N - 1))
    ci = scipy.stats.t.interval(0.95, df, loc=d.mean(), scale=se)
    assert nll["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert (nll["ci_low"], nll["ci_high"]) == pytest.approx(ci, abs=1e-9)
    assert nll["se_seeds"] == pytest.approx(d.std(ddof=1) / math.sqrt(3), abs=1e-12)
    assert nll["se"] == pytest.approx(se, abs=1e-12)
    assert nll["n_seeds"] == 3 and nll["n_images"] == N and nll["verdict"] == claims.REPRODUCED
    kl = next(r for r in rows if r["metric"] == "kl")      # A's KL is lower: "A worse" is not reproduced
    assert kl["diff"] < 0 and kl["verdict"] == claims.NOT_REPRODUCED


def test_axis_selection_orients_every_pair_and_skips_other_axes(tmp_path):
    """ar1 vs diagonal: the two single-axis posterior pairs, each oriented ar1 - diagonal whatever the grid
    order; a pair that also differs in the likelihood is not selected."""
    records = {"d1": _record("d1", 0), "r1": _record("r1", 0, posterior="ar1"),
               "r2": _record("r2", 0, posterior="ar1", likelihood="bernoulli", space="binarised"),
               "d2": _record("d2", 0, likelihood="bernoulli", space="binarised")}
    inputs = _study_cells({"d1": 0.0, "r1": -2.0, "r2": 0.0, "d2": 0.0}, records)
    path = _claims_file(tmp_path, "claims:\n  c:\n    claim: AR1 helps\n    source: rho\n    comparisons:\n"
                                  "      - {axis: posterior, a_value: ar1, b_value: diagonal, metrics: {elbo: better}}\n")
    rows = claims.check_claims(claims.load_claims(path), inputs, ["mnist"], ["d1", "r1", "r2", "d2"])
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("r1", "d1"), ("r2", "d2")]
    assert rows[0]["diff"] > 0 and rows[0]["verdict"] == claims.REPRODUCED      # ELBO of r1 is 2 nats higher
    assert rows[1]["verdict"] == claims.INCONCLUSIVE


def test_missing_models_and_incomparable_pairs_are_not_tested_with_the_reason(tmp_path):
    records = {"a": _record("a", 0), "bern": _record("bern", 0, likelihood="bernoulli", space="binarised")}
    inputs = _study_cells({"a": 0.0, "bern": 0.0}, records)
    path = _claims_file(tmp_path, "claims:\n  c:\n    claim: t\n    source: s\n    comparisons:\n"
                                  "      - {a: a, b: [bern, absent], metrics: {nll: better}}\n"
                                  "      - {axis: posterior, a_value: ar1, b_value: diagonal, metrics: {elbo: better}}\n")
    rows = claims.check_claims(claims.load_claims(path), inputs, ["mnist"], ["a", "bern"])
    assert [r["verdict"] for r in rows] == [claims.NOT_TESTED] * 3
    assert "different data spaces" in rows[0]["reason"]
    assert "not in the study on mnist: absent" == rows[1]["reason"]
    assert "differ only in posterior" in rows[2]["reason"]


def test_claims_csv_round_trip_and_readme_table(tmp_path):
    records = {"iwae": _record("iwae", 0), "vae_bernoulli": _record("vae_bernoulli", 0)}
    inputs = _study_cells({"iwae": -1.0, "vae_bernoulli": 0.0}, records)
    rows = claims.check_claims(claims.load_claims(REPO / paths.CLAIMS), inputs, ["mnist"], ["iwae", "vae_bernoulli"])
    path = claims.write_claims_csv(rows, tmp_path / "claims.csv")
    back = claims.read_claims_csv(path)
    assert list(back.columns) == claims.COLUMNS and len(back) == len(rows)
    iwae = back[back["claim_id"] == "iwae_beats_vae"].iloc[0]
    assert iwae["verdict"] == claims.REPRODUCED and iwae["diff"] == next(
        r["diff"] for r in rows if r["claim_id"] == "iwae_beats_vae")                # full precision
    assert iwae["published_source"] == "IWAE Table 1" and iwae["published_diff"] == pytest.approx(86.76 - 86.76)
    # every other claim names models that are not in this study: listed as not tested, never dropped
    assert set(back["claim_id"]) == set(claims.load_claims(REPO / paths.CLAIMS))
    table = readme.verdicts_table(path)
    assert "| IWAE's L_k beats the VAE's on binarised MNIST | mnist | iwae vs vae_bernoulli |" in table
    # the table shows the rows about this study's models; the rest are named in one sentence after it
    shown, absent = claims.split_absent(rows)
    assert absent and all(r["reason"].startswith(claims.NOT_IN_STUDY) for r in absent)
    assert table.startswith(f"{len(shown)} checks: 1 reproduced, 0 not reproduced, 0 inconclusive, "
                            f"{len(shown) - 1} not tested")
    assert f"{len(absent)} comparison(s) of" in table and "geco_lower_kl" in table


def test_the_study_is_refused_before_any_job_when_claims_yaml_is_bad(tmp_path):
    """vaebench.validation (what Snakemake's common.smk run first) checks the claims file next to
    the catalogue."""
    from vaebench.validation import load_study

    (tmp_path / paths.CATALOGUE).write_text((REPO / paths.CATALOGUE).read_text())
    load_study(REPO / paths.DEFAULT_STUDY, catalogue=tmp_path / paths.CATALOGUE)       # no claims file: fine
    _claims_file(tmp_path, "claims:\n  c:\n    claim: t\n    source: s\n    comparisons:\n"
                           "      - {a: iwae, b: vae_bernouli, metrics: {nll: better}}\n")
    with pytest.raises(ConfigError, match="claims.c.comparisons.0 names model 'vae_bernouli'"):
        load_study(REPO / paths.DEFAULT_STUDY, catalogue=tmp_path / paths.CATALOGUE)


def _claim(tmp_path: Path, body: str) -> dict:
    return claims.load_claims(_claims_file(tmp_path, "claims:\n  c:\n    claim: t\n    source: s\n" + body))


def test_a_failed_precondition_gives_not_tested_with_the_model_and_numbers(tmp_path):
    """Each precondition gates its metrics: a collapsed model, an unconverged L_k, an unconverged learned sigma, an
    unsettled GECO and an uninformative FID each turn a clear win into 'not tested' naming the model and numbers."""
    comp = "    comparisons:\n      - {a: a, b: b, metrics: {nll: better, fid: better}}\n"
    base = {"a": _record("a", 0, fid=10.0), "b": _record("b", 0, fid=60.0)}

    def rows_with(requires: str, a_change=None, b_change=None, per_image_gap=0.1):
        recs = {"a": {**base["a"], **(a_change or {})}, "b": {**base["b"], **(b_change or {})}}
        inputs = _study_cells({"a": -5.0, "b": 0.0}, recs)
        for c in inputs:
            c.per_image["L_k10"] = c.per_image["L_k"] - per_image_gap
        rows = claims.check_claims(_claim(tmp_path, f"    requires: [{requires}]\n" + comp), inputs, ["mnist"],
                                   ["a", "b"])
        return {r["metric"]: r for r in rows}

    ok = rows_with("not_collapsed, lk_converged, learned_sigma_converged, geco_settled, fid_informative")
    assert ok["nll"]["verdict"] == claims.REPRODUCED and ok["fid"]["verdict"] == claims.REPRODUCED
    collapsed = rows_with("not_collapsed", b_change={"active_units": 0, "test_kl_nats": 0.001})
    assert collapsed["nll"]["verdict"] == collapsed["fid"]["verdict"] == claims.NOT_TESTED
    assert "posterior collapsed (0 active units): b seeds 0, 1, 2 (test KL 0.001 nats)" in collapsed["nll"]["reason"]
    lk = rows_with("lk_converged", per_image_gap=2.5)
    assert lk["nll"]["verdict"] == claims.NOT_TESTED and lk["fid"]["verdict"] == claims.REPRODUCED
    assert "L_k not converged: a: L_k - L_(k/10) = 2.5 > 1 nats (k = 100)" in lk["nll"]["reason"]
    sigma = rows_with("learned_sigma_converged", a_change={"sigma_mode": "learned_shared", "log_sigma": -0.31,
                                                           "test_mse": math.exp(-3.44)})
    assert sigma["nll"]["verdict"] == claims.NOT_TESTED
    assert "a seed 0: log sigma -0.31 vs its optimum 1/2 log MSE -1.72" in sigma["nll"]["reason"]
    calibrated = rows_with("learned_sigma_converged", a_change={"sigma_mode": "learned_shared", "log_sigma": -1.70,
                                                                "test_mse": math.exp(-3.44)})
    assert calibrated["nll"]["verdict"] == claims.REPRODUCED
    geco = {"objective_params": {"constraint": "sse", "kappa": 4.0, "lambda_init": 1.0}, "lambda": 0.01,
            "geco_constraint_ma": -9.0}
    unsettled = rows_with("geco_settled", a_change=geco)
    assert unsettled["nll"]["verdict"] == claims.NOT_TESTED and "a seed 0 (inactive)" in unsettled["nll"]["reason"]
    blurred = {"fid_blurred_reference": 5.0}
    fid = rows_with("fid_informative", a_change=blurred, b_change=blurred)
    assert fid["fid"]["verdict"] == claims.NOT_TESTED and fid["nll"]["verdict"] == claims.REPRODUCED
    assert "both models score no better than the blurred held-out images (FID 5)" in fid["fid"]["reason"]
    low_accuracy = rows_with("fid_informative", a_change={"classifier_test_accuracy": 0.9889})
    assert "test accuracy 0.9889 < 0.99" in low_accuracy["fid"]["reason"]


def test_scope_protocol_and_non_inferiority(tmp_path):
    """A claim outside its scope, or on models trained below the source's epochs, is not tested; non-inferiority
    passes a slightly worse A inside the margin and fails one far outside it."""
    records = {"a": _record("a", 0), "b": _record("b", 0)}
    scoped = _claim(tmp_path, "    scope: [svhn]\n    comparisons:\n      - {a: a, b: b, metrics: {nll: better}}\n")
    (row,) = claims.check_claims(scoped, _study_cells({"a": -5.0, "b": 0.0}, records), ["mnist"], ["a", "b"])
    assert row["verdict"] == claims.NOT_TESTED and row["reason"] == \
        "outside the claim's scope: the source states it for svhn"
    short = _claim(tmp_path, "    min_epochs: 15\n    comparisons:\n      - {a: a, b: b, metrics: {nll: better}}\n")
    few = {"a": {**records["a"], "epochs": 1}, "b": records["b"]}
    (row,) = claims.check_claims(short, _study_cells({"a": -5.0, "b": 0.0}, few), ["mnist"], ["a", "b"])
    assert row["verdict"] == claims.NOT_TESTED and row["reason"] == \
        "trained below the source's protocol (15 epochs): a 1 epoch"
    (row,) = claims.check_claims(short, _study_cells({"a": -5.0, "b": 0.0}, records), ["mnist"], ["a", "b"])
    assert row["verdict"] == claims.REPRODUCED
    per_model = _claim(tmp_path, "    min_epochs: {a: 1, b: 15}\n    comparisons:\n"
                                 "      - {a: a, b: b, metrics: {nll: better}}\n")
    (row,) = claims.check_claims(per_model, _study_cells({"a": -5.0, "b": 0.0}, few), ["mnist"], ["a", "b"])
    assert row["verdict"] == claims.REPRODUCED  # a's own protocol is 1 epoch
    few_b = {"a": records["a"], "b": {**records["b"], "epochs": 10}}
    (row,) = claims.check_claims(per_model, _study_cells({"a": -5.0, "b": 0.0}, few_b), ["mnist"], ["a", "b"])
    assert row["verdict"] == claims.NOT_TESTED and row["reason"] == \
        "trained below the source's protocol (b 15 epochs): b 10 epochs"
    noninf = _claim(tmp_path, "    comparisons:\n      - {a: a, b: b, metrics: {nll: {noninferior: 5.0}}}\n")
    for shift, want in ((1.0, claims.REPRODUCED), (-3.0, claims.REPRODUCED), (20.0, claims.NOT_REPRODUCED)):
        (row,) = claims.check_claims(noninf, _study_cells({"a": shift, "b": 0.0}, records), ["mnist"], ["a", "b"])
        assert row["verdict"] == want, (shift, row)
        assert row["expected"] == "A not worse by more than 5"


def test_video_metrics_inception_fid_per_seed_and_ssim_per_sequence(tmp_path):
    """fid_inception compares per seed (A's FIDs 1 lower at every seed: non-inferior within 1.0 and better) with
    the t interval over the seed differences; ssim pairs over seeds and the same test sequences; a cell without an
    Inception FID gives 'not tested' with its status; the repository's video claim is out of scope elsewhere."""
    records = {m: {**_record(m, 0), "dataset": "mnist"} for m in ("a", "b")}
    inputs = _study_cells({"a": 0.0, "b": 0.0}, records)
    for c in inputs:
        a = c.cell[1] == "a"
        c.record["fid_inception"] = 30.0 + c.cell[2] - (1.0 if a else 0.0) + (0.05 * c.cell[2] if a else 0.0)
        c.per_image["ssim_best"] = 0.7 + 0.01 * np.arange(N) / N + (0.02 if a else 0.0) + 0.001 * c.cell[2]
    path = _claims_file(tmp_path, "claims:\n  v:\n    claim: video\n    source: paper\n    comparisons:\n"
                                  "      - {a: a, b: b, metrics: {fid_inception: {noninferior: 1.0}, ssim: better}}\n")
    rows = {r["metric"]: r for r in claims.check_claims(claims.load_claims(path), inputs, ["mnist"], ["a", "b"])}
    d = np.array([-1.0 + 0.05 * s for s in SEEDS])
    ci = scipy.stats.t.interval(0.95, 2, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(3))
    assert rows["fid_inception"]["diff"] == pytest.approx(d.mean())
    assert (rows["fid_inception"]["ci_low"], rows["fid_inception"]["ci_high"]) == pytest.approx(ci)
    assert rows["fid_inception"]["verdict"] == claims.REPRODUCED
    assert rows["ssim"]["diff"] == pytest.approx(0.02) and rows["ssim"]["verdict"] == claims.REPRODUCED
    assert rows["ssim"]["n_images"] == N
    for c in inputs:
        if c.cell[1] == "b":
            c.record.update({"fid_inception": None, "fid_inception_status": "not computed: weights unavailable"})
    rows = {r["metric"]: r for r in claims.check_claims(claims.load_claims(path), inputs, ["mnist"], ["a", "b"])}
    assert rows["fid_inception"]["verdict"] == claims.NOT_TESTED
    assert "Inception FID unavailable: not computed: weights unavailable" in rows["fid_inception"]["reason"]
    repo = claims.load_claims(REPO / paths.CLAIMS, set(load_catalogue(REPO / paths.CATALOGUE)))
    assert repo["calibrated_decoder_video"].scope == ["bair"]
