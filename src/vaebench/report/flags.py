"""Diagnostics next to the numbers, each with its rule: L_k convergence, GECO settling, FID classifier accuracy,
FID floor."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vaebench.metrics import spec
from vaebench.metrics.uncertainty import per_image_se
from vaebench.report.collect import CellData, fid_unavailable, is_number, summarise_seeds

GECO_C_FRACTION = 0.1        # |C_ma| above this fraction of kappa^2 (sse) or kappa (nll): not settled
GECO_LAMBDA_CHANGE = 0.05    # relative change of lambda over the last epoch above this: not settled
CLASSIFIER_MIN_ACCURACY = 0.99
SIGMA_TOLERANCE = 0.1        # |log sigma - 1/2 log MSE| above this: a learned shared sigma has not converged
_LAMBDA, _C_MA = spec.TRACKED["lambda"], spec.TRACKED["constraint"]

RULES = {
    "lk_not_converged": ("mean over training seeds of the per-image mean of L_k - L_{k/10} (same importance "
                         "samples, nats/image) > lk_tolerance_nats: the bound -L_k has not converged and an "
                         "NLL difference may be bias of the bound."),
    "geco_not_settled": (f"at the end of training C_ma > {GECO_C_FRACTION:g} kappa^2 (constraint sse; kappa for "
                         "nll): the reconstruction target is not met; C_ma < -that: the constraint is inactive "
                         "(over-satisfied, lambda -> 0: kappa is too loose to bind on this data); else lambda "
                         f"changed by more than {GECO_LAMBDA_CHANGE:.0%} over the last training epoch (training "
                         "log; with one epoch, against lambda_init): still moving."),
    "classifier_accuracy_low": f"test accuracy of the FID classifier below {CLASSIFIER_MIN_ACCURACY:g}.",
    "learned_sigma_not_converged": (f"a learned shared sigma with |log sigma - 1/2 log MSE| > {SIGMA_TOLERANCE:g} at "
                                    "the end of training, MSE the model's own test reconstruction error: sigma is "
                                    "not its analytic optimum given the reconstructions (Rybkin et al. 2021, eq. 5)."),
    "collapsed_posterior": "a model with 0 active units (posterior-mean variance <= 0.01 in every latent dimension; "
                           "for a sequence model, of the posterior mean's departure from the learned prior in prior "
                           "standard deviations) in some seed: z carries no information about x (beyond the past "
                           "frames).",
    "fid_floor": ("FID of fid_floor_n held-out real images against the test-split statistics: the value of a "
                  "perfect model at this N (not a flag; shown next to every FID)."),
}


def _cells_of(inputs: list[CellData], dataset: str, model: str) -> list[CellData]:
    return sorted((c for c in inputs if c.cell[0] == dataset and c.cell[1] == model), key=lambda c: c.cell[2])


def lk_columns(per_image: dict[str, np.ndarray]) -> list[str]:
    """The importance-weighted bounds of a per-image file: ``L_k`` first, then every ``L_k_<column>``
    (e.g. ``L_k_discretised``) that has its ``L_k10_<column>`` diagnostic partner."""
    extra = sorted(k for k in per_image if k.startswith("L_k_") and "L_k10_" + k[len("L_k_"):] in per_image)
    return ["L_k"] + extra


def _first(values: list, default=None):
    return next((v for v in values if v is not None), default)


def lk_status(inputs: list[CellData], datasets: list[str], models: list[str]) -> list[dict]:
    """The L_k convergence diagnostic of every dataset x model x likelihood column, in grid order."""
    out = []
    for d in datasets:
        for m in models:
            cells = _cells_of(inputs, d, m)
            if not cells:
                continue
            columns = [c for c in lk_columns(cells[0].per_image) if all(c in x.per_image for x in cells)]
            tolerance = _first([x.record.get("lk_tolerance_nats") for x in cells])
            for col in columns:
                gaps, ses = [], []
                for x in cells:
                    delta = x.per_image[col] - x.per_image[col.replace("L_k", "L_k10", 1)]
                    gaps.append(float(np.mean(delta)))
                    try:
                        ses.append(per_image_se(delta))
                    except ValueError:    # a single image or a non-finite value: no standard error
                        ses.append(None)
                summary = summarise_seeds(gaps)
                gap = summary["mean"]
                se_images = None if None in ses else math.sqrt(sum(s ** 2 for s in ses)) / len(ses)
                out.append({
                    "dataset": d, "model": m, "column": col, "gap_nats": gap,
                    "gap_se_seeds": summary["se"], "gap_se_images": se_images,
                    "tolerance_nats": tolerance, "iwae_k": _first([x.record.get("iwae_k") for x in cells]),
                    "n_seeds": summary["n_seeds"],
                    "converged": bool(gap is not None and is_number(tolerance) and gap <= tolerance),
                })
    return out


def geco_threshold(constraint, kappa) -> float | None:
    """The |C_ma| above which a GECO run is not settled: 0.1 kappa^2 for 'sse', 0.1 kappa for 'nll'
    (None for anything else)."""
    if not is_number(kappa):
        return None
    if constraint == "sse":
        return GECO_C_FRACTION * float(kappa) ** 2
    if constraint == "nll":
        return GECO_C_FRACTION * abs(float(kappa))
    return None


def geco_status(inputs: list[CellData]) -> list[dict]:
    """Whether every GECO-trained cell had settled, in the order of ``inputs``."""
    out = []
    for c in inputs:
        rec = c.record
        if not (is_number(rec.get(_LAMBDA.record_key)) and is_number(rec.get(_C_MA.record_key))):
            continue
        params = rec.get("objective_params") or {}
        constraint, kappa = params.get("constraint"), params.get("kappa")
        c_ma, lam = float(rec[_C_MA.record_key]), float(rec[_LAMBDA.record_key])
        threshold = geco_threshold(constraint, kappa)
        trace = [float(v) for v in c.log[_LAMBDA.name].dropna()] if _LAMBDA.name in c.log.columns else []
        last = trace[-1] if trace else None
        previous = trace[-2] if len(trace) >= 2 else (params.get("lambda_init") if trace else None)
        change = (abs(last / float(previous) - 1.0)
                  if last is not None and is_number(previous) and float(previous) != 0.0 else None)
        reasons, state = [], "settled"
        bound = "kappa^2" if constraint == "sse" else "kappa"
        if threshold is not None and c_ma > threshold:
            state = "not met"
            reasons.append(f"C_ma = {c_ma:+.4g} > {GECO_C_FRACTION:g} {bound} = {threshold:.4g}: the reconstruction "
                           "target is not met")
        elif threshold is not None and c_ma < -threshold:
            state = "inactive"
            reasons.append(f"C_ma = {c_ma:+.4g} < -{GECO_C_FRACTION:g} {bound} = {-threshold:.4g}, lambda = "
                           f"{lam:.3g}: the constraint is over-satisfied and does not bind (kappa too loose)")
        elif change is not None and change > GECO_LAMBDA_CHANGE:
            state = "moving"
            reasons.append(f"lambda changed by {change:.1%} over the last epoch ({float(previous):.4g} -> "
                           f"{last:.4g}) > {GECO_LAMBDA_CHANGE:.0%}")
        out.append({
            "dataset": c.cell[0], "model": c.cell[1], "seed": c.cell[2], "constraint": constraint,
            "kappa": float(kappa) if is_number(kappa) else None, "c_ma": c_ma, "c_ma_threshold": threshold,
            "lambda": lam, "lambda_previous": float(previous) if is_number(previous) else None,
            "lambda_change": change, "state": state, "settled": state == "settled", "reasons": reasons,
        })
    return out


def sigma_status(inputs: list[CellData]) -> list[dict]:
    """Every cell with a learned shared sigma: {"dataset", "model", "seed", "log_sigma", "optimum" (1/2 log of its
    test MSE), "difference", "tolerance", "converged"}, in the order of ``inputs``."""
    out = []
    for c in inputs:
        rec = c.record
        if rec.get("sigma_mode") != "learned_shared":
            continue
        log_sigma, mse = rec.get("log_sigma"), rec.get("test_mse")
        optimum = 0.5 * math.log(mse) if is_number(mse) and mse > 0 else None
        diff = log_sigma - optimum if is_number(log_sigma) and optimum is not None else None
        out.append({"dataset": c.cell[0], "model": c.cell[1], "seed": c.cell[2], "log_sigma": log_sigma,
                    "optimum": optimum, "difference": diff, "tolerance": SIGMA_TOLERANCE,
                    "converged": diff is not None and abs(diff) <= SIGMA_TOLERANCE})
    return out


def collapse_status(inputs: list[CellData]) -> list[dict]:
    """Every cell: {"dataset", "model", "seed", "active_units", "kl" (test KL, nats), "collapsed" (0 active
    units)}, in the order of ``inputs``; cells without an active-unit count are left out."""
    return [{"dataset": c.cell[0], "model": c.cell[1], "seed": c.cell[2], "active_units": int(c.record["active_units"]),
             "kl": c.record.get("test_kl_nats"), "collapsed": int(c.record["active_units"]) == 0}
            for c in inputs if is_number(c.record.get("active_units"))]


def classifier_status(records: list[dict], datasets: list[str]) -> list[dict]:
    """Per dataset: {"dataset", "test_accuracy" (the lowest recorded; None when none is), "threshold",
    "ok" (accuracy >= threshold; None without an accuracy)}, plus "unavailable" (the reason) for a dataset
    without a classifier (:func:`vaebench.report.collect.fid_unavailable`)."""
    out = []
    for d in datasets:
        accs = [float(r["classifier_test_accuracy"]) for r in records
                if r["dataset"] == d and is_number(r.get("classifier_test_accuracy"))]
        acc = min(accs) if accs else None
        entry = {"dataset": d, "test_accuracy": acc, "threshold": CLASSIFIER_MIN_ACCURACY,
                 "ok": None if acc is None else acc >= CLASSIFIER_MIN_ACCURACY}
        reason = fid_unavailable(records, d)
        if reason is not None:
            entry["unavailable"] = reason
        out.append(entry)
    return out


def fid_floors(records: list[dict], datasets: list[str]) -> list[dict]:
    """Per dataset: {"dataset", "floor" (FID of held-out real images vs the test statistics), "floor_n",
    "fid_n" (the samples of the models' FIDs)}; None where the metrics files hold no value; plus
    "unavailable" (the reason) for a dataset without a classifier."""
    out = []
    for d in datasets:
        recs = [r for r in records if r["dataset"] == d]
        entry = {"dataset": d,
                 "floor": _first([r.get("fid_floor") for r in recs if is_number(r.get("fid_floor"))]),
                 "floor_n": _first([r.get("fid_floor_n") for r in recs]),
                 "blurred": _first([r.get("fid_blurred_reference") for r in recs
                                    if is_number(r.get("fid_blurred_reference"))]),
                 "noise": _first([r.get("fid_noise_reference") for r in recs if is_number(r.get("fid_noise_reference"))]),
                 "fid_n": _first([r.get("fid_n") for r in recs])}
        reason = fid_unavailable(records, d)
        if reason is not None:
            entry["unavailable"] = reason
        out.append(entry)
    return out


@dataclass
class Diagnostics:
    """Every diagnostic of a study: ``lk`` (:func:`lk_status`), ``geco`` (:func:`geco_status`),
    ``classifier`` (:func:`classifier_status`) and ``fid_floor`` (:func:`fid_floors`), all entries, flagged
    or not (the report's tables show them all; :func:`flags_json` keeps the flagged ones)."""

    lk: list[dict] = field(default_factory=list)
    geco: list[dict] = field(default_factory=list)
    classifier: list[dict] = field(default_factory=list)
    fid_floor: list[dict] = field(default_factory=list)
    sigma: list[dict] = field(default_factory=list)
    collapse: list[dict] = field(default_factory=list)

    def lk_entry(self, dataset: str, model: str, column: str = "L_k") -> dict | None:
        """The :func:`lk_status` entry of one dataset x model x column (None when there is none)."""
        return next((e for e in self.lk if (e["dataset"], e["model"], e["column"]) == (dataset, model, column)),
                    None)

    def not_converged(self, dataset: str, model: str, column: str = "L_k") -> bool:
        """Whether that L_k column is flagged as not converged."""
        entry = self.lk_entry(dataset, model, column)
        return entry is not None and not entry["converged"]


def diagnose(inputs: list[CellData], datasets: list[str], models: list[str]) -> Diagnostics:
    """Every diagnostic of the cells ``inputs`` (see docs/report.md for the rules)."""
    records = [c.record for c in inputs]
    return Diagnostics(lk=lk_status(inputs, datasets, models), geco=geco_status(inputs),
                       classifier=classifier_status(records, datasets), fid_floor=fid_floors(records, datasets),
                       sigma=sigma_status(inputs), collapse=collapse_status(inputs))


def flags_json(diag: Diagnostics) -> dict:
    """The ``flags`` of reports/metrics.json: {"rules": {flag: rule text}, "lk_not_converged": [lk entries
    not converged], "geco_not_settled": [GECO cells not settled], "classifier_accuracy_low": [datasets whose
    classifier is below the threshold], "fid_floor": [every dataset's floor]}."""
    return {
        "rules": dict(RULES),
        "lk_not_converged": [e for e in diag.lk if not e["converged"]],
        "geco_not_settled": [e for e in diag.geco if not e["settled"]],
        "classifier_accuracy_low": [e for e in diag.classifier if e["ok"] is False],
        "learned_sigma_not_converged": [e for e in diag.sigma if not e["converged"]],
        "collapsed_posterior": [e for e in diag.collapse if e["collapsed"]],
        "fid_floor": list(diag.fid_floor),
    }
