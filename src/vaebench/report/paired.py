"""Paired comparisons of the models that differ in exactly one component, over common seeds and the same test
images (Dror et al. 2018)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vaebench.metrics.uncertainty import paired_difference, paired_difference_scalar
from vaebench.metrics import spec
from vaebench.report.collect import LEVEL, CellData, flatten_for_csv, is_number
from vaebench.report.flags import Diagnostics

COMPARED_AXES = ("architecture", "latent_dim", "posterior", "likelihood", "objective")
LIKELIHOOD_METRICS = ("nll", "elbo", "nll_discretised")
NOT_COMPARED = "not compared"
PAIR_SETTING_SECTIONS = ("train", "evaluate", "data")



def axis_value(record: dict, axis: str) -> Any:
    """The resolved value of one axis of a model: ``latent_dim``, or {"name": ..., **settings}."""
    if axis == "latent_dim":
        return record["latent_dim"]
    return {"name": record[axis], **(record.get(f"{axis}_params") or {})}


def axis_text(record: dict, axis: str) -> str:
    """An axis value as text: '20', 'elbo (beta = 1.0)', 'gaussian_fixed (sigma = 1.0)', 'ar1'."""
    value = axis_value(record, axis)
    if not isinstance(value, dict):
        return str(value)
    settings = ", ".join(f"{k} = {v}" for k, v in value.items() if k != "name")
    return f"{value['name']} ({settings})" if settings else str(value["name"])


def differing_axes(a: dict, b: dict) -> list[str]:
    """The axes of :data:`COMPARED_AXES` (in that order) on which the metrics records ``a`` and ``b`` differ."""
    return [axis for axis in COMPARED_AXES if axis_value(a, axis) != axis_value(b, axis)]


def other_differences(a: dict, b: dict) -> list[str]:
    """Stage settings of the cell records (``cell.train``, ``cell.evaluate``, ``cell.data``) that differ
    between two models, as 'train.lr: 0.001 vs 0.0005' (A's value first); empty when none."""
    fa = flatten_for_csv({s: (a.get("cell") or {}).get(s) or {} for s in PAIR_SETTING_SECTIONS})
    fb = flatten_for_csv({s: (b.get("cell") or {}).get(s) or {} for s in PAIR_SETTING_SECTIONS})
    return [f"{k}: {fa.get(k)} vs {fb.get(k)}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def model_record(dataset: str, model: str, cells: dict[int, CellData]) -> dict:
    """The metrics record that describes ``model`` (its first seed), checked to resolve to the same
    configuration in every seed.

    Raises:
        ValueError: two seeds of the model disagree on an axis (stale or foreign metrics files).
    """
    seeds = sorted(cells)
    first = cells[seeds[0]].record
    for s in seeds[1:]:
        bad = differing_axes(first, cells[s].record)
        if bad:
            raise ValueError(f"{dataset}/{model}: seeds {seeds[0]} and {s} were evaluated with different "
                             f"{', '.join(bad)} ({cells[s].files['metrics']}); rerun train and evaluate")
    return first


def single_axis_pairs(records: dict[str, dict], models: list[str]) -> list[tuple[str, str, str]]:
    """(A, B, axis) for every pair of ``models`` (A before B in that order) whose records (``records[m]``)
    differ in exactly one axis; models without a record are skipped."""
    present = [m for m in models if m in records]
    out = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            axes = differing_axes(records[a], records[b])
            if len(axes) == 1:
                out.append((a, b, axes[0]))
    return out



DISCRETE_COLUMN = "L_k_discretised"
# per-seed metrics: (name in reasons, the record field that says why a cell has none)
UNAVAILABLE = {"fid_classifier": ("FID", "fid_classifier_unavailable"),
               "fid_inception": ("Inception FID", "fid_inception_status")}


def discrete_column(record: dict, per_image: dict[str, np.ndarray]) -> str | None:
    """The per-image L_k of a model's discrete 8-bit likelihood: 'L_k' when its ``data_space`` is discrete,
    'L_k_discretised' when the per-image file has that column (Gaussian decoders), else None."""
    if record.get("data_space") == "discrete":
        return "L_k"
    return DISCRETE_COLUMN if DISCRETE_COLUMN in per_image else None


def _invalid_reason(a: str, rec_a: dict, b: str, rec_b: dict) -> str | None:
    invalid = [m for m, r in ((a, rec_a), (b, rec_b)) if r.get("valid_density") is False]
    if not invalid:
        return None
    return f"not a normalised density: {', '.join(invalid)} (valid_density = false)"


def _space_reason(a: str, rec_a: dict, b: str, rec_b: dict) -> str | None:
    sa, sb = rec_a.get("data_space"), rec_b.get("data_space")
    if sa == sb:
        return None
    instead = ("the 8-bit discrete likelihood (nll_discretised), KL and FID" if "binarised" not in (sa, sb)
               else "KL and FID (a likelihood of binarised images compares with no likelihood of the grey levels)")
    return f"different data spaces: {a} is {_space_text(sa)}, {b} {_space_text(sb)}; compare them on {instead}"


def _space_text(space) -> str:
    declared = spec.DATA_SPACES.get(space)
    return declared.text if declared else f"in data space {space}"


def _check_same_images(dataset: str, pairs: list[tuple[CellData, CellData]]) -> None:
    """Raise ValueError unless every per-image file of ``pairs`` holds the same test images (``index``)."""
    ref_cell = pairs[0][0]
    ref = ref_cell.per_image["index"]
    for ca, cb in pairs:
        for c in (ca, cb):
            if not np.array_equal(c.per_image["index"], ref):
                raise ValueError(
                    f"{dataset}: {c.files['per_image']} and {ref_cell.files['per_image']} are on different test "
                    "images (index arrays differ): a paired comparison needs the same evaluate.n_images and "
                    "evaluate.seed for every model; rerun evaluate")


def _stats_keys(result: dict | None) -> dict:
    keys = ("diff", "se", "se_images", "se_seeds", "ci_low", "ci_high", "level", "interval_basis", "df", "n_seeds",
            "n_images", "verdict", "diff_per_seed", "se_per_seed")
    if result is None:
        return {k: None for k in keys} | {"verdict": NOT_COMPARED, "level": LEVEL}
    return {k: result[k] for k in keys}


def _row(base: dict, metric: str, result: dict | None = None, reason: str | None = None,
         lk_not_converged: list[str] | None = None) -> dict:
    declared = spec.compared(metric)
    row = {**base, "metric": metric, "metric_label": declared.label, "higher_is_better": declared.higher_is_better,
           "compared": result is not None, "reason": reason, **_stats_keys(result),
           "lk_not_converged": list(lk_not_converged or [])}
    if result is None:
        row["n_seeds"] = 0
    verdict = row["verdict"]
    row["better"] = base["model_a"] if verdict == "A better" else base["model_b"] if verdict == "B better" else None
    return row


def pair_base(dataset: str, a: str, b: str, axis: str | None, cells_a: dict[int, CellData],
              cells_b: dict[int, CellData]) -> dict:
    """The fields that describe a pair in every row: dataset, models, the axis on which they differ (None for a pair
    named directly, e.g. by a claim) with both values, the other setting differences and the common seeds."""
    rec_a, rec_b = cells_a[min(cells_a)].record, cells_b[min(cells_b)].record
    return {"dataset": dataset, "model_a": a, "model_b": b, "axis": axis,
            "value_a": axis_text(rec_a, axis) if axis else None, "value_b": axis_text(rec_b, axis) if axis else None,
            "other_differences": other_differences(rec_a, rec_b), "seeds": sorted(set(cells_a) & set(cells_b))}


def _not_comparable(metric: str, a: str, rec_a: dict, b: str, rec_b: dict) -> str | None:
    """Why ``metric`` cannot compare the two models (None when it can), from its declared ``comparable``."""
    comparable = spec.compared(metric).comparable
    reasons = []
    if comparable in ("density", "valid_density"):
        reasons.append(_invalid_reason(a, rec_a, b, rec_b))
    if comparable in ("density", "same_space"):
        reasons.append(_space_reason(a, rec_a, b, rec_b))
    return "; ".join(r for r in reasons if r) or None


def compare_metric(base: dict, metric: str, cells_a: dict[int, CellData], cells_b: dict[int, CellData],
                   diagnostics: Diagnostics | None = None) -> dict:
    """One comparison row: ``metric`` (a comparison name of :mod:`vaebench.metrics.spec`) of model A - model B of ``base`` (:func:`pair_base`),
    paired over the common seeds and, for per-image metrics, over the same test images.

    Raises:
        ValueError: the per-image files of the two models are on different test images.
    """
    a, b, dataset, seeds = base["model_a"], base["model_b"], base["dataset"], base["seeds"]
    if not seeds:
        return _row(base, metric, reason="no training seed in common")
    rec_a, rec_b = cells_a[min(cells_a)].record, cells_b[min(cells_b)].record
    pairs = [(cells_a[s], cells_b[s]) for s in seeds]
    declared = spec.compared(metric)
    higher = declared.higher_is_better
    if declared.per_image is None:
        fid = [(ca.record.get(declared.key), cb.record.get(declared.key)) for ca, cb in pairs]
        fid = [(fa, fb) for fa, fb in fid if is_number(fa) and is_number(fb)]
        if not fid:
            name, why = UNAVAILABLE.get(declared.key, (declared.label, ""))
            unavailable = rec_a.get(why) or rec_b.get(why)
            return _row(base, metric, reason=f"{name} unavailable: {unavailable}" if unavailable else
                        f"no {name} for a common seed")
        try:
            result = paired_difference_scalar([f[0] for f in fid], [f[1] for f in fid], level=LEVEL,
                                              higher_is_better=higher)
        except ValueError as exc:    # a non-finite FID
            return _row(base, metric, reason=str(exc))
        return _row(base, metric, result)

    reason = _not_comparable(metric, a, rec_a, b, rec_b)
    if reason:
        return _row(base, metric, reason=reason)
    if declared.per_image == DISCRETE_COLUMN:
        col_a, col_b = discrete_column(rec_a, pairs[0][0].per_image), discrete_column(rec_b, pairs[0][1].per_image)
        missing = [m for m, col in ((a, col_a), (b, col_b)) if col is None]
        if missing:
            return _row(base, metric, reason=f"no discrete likelihood: {', '.join(missing)}")
        if any(col_a not in ca.per_image or col_b not in cb.per_image for ca, cb in pairs):
            return _row(base, metric, reason="a seed lacks the discrete likelihood column")
    else:
        col_a = col_b = declared.per_image
    sign = declared.per_image_sign
    _check_same_images(dataset, pairs)
    try:
        result = paired_difference([sign * ca.per_image[col_a] for ca, _ in pairs],
                                   [sign * cb.per_image[col_b] for _, cb in pairs],
                                   level=LEVEL, higher_is_better=higher)
    except ValueError as exc:   # a non-finite per-image value, or a single image
        return _row(base, metric, reason=str(exc))
    diag = diagnostics or Diagnostics()
    flagged = [m for m, col in ((a, col_a), (b, col_b))
               if col.startswith("L_k") and diag.not_converged(dataset, m, col)]
    return _row(base, metric, result, lk_not_converged=flagged)


def compare_pair(dataset: str, a: str, b: str, axis: str, cells_a: dict[int, CellData],
                 cells_b: dict[int, CellData], diagnostics: Diagnostics | None = None) -> list[dict]:
    """The comparison rows of one pair (rows: docs/report.md), A - B, in the spec's order of paired metrics.

    Raises:
        ValueError: the per-image files of a per-image comparison are on different test images.
    """
    base = pair_base(dataset, a, b, axis, cells_a, cells_b)
    names = spec.paired_names()
    if not base["seeds"]:
        return [_row(base, m, reason="no training seed in common") for m in names]
    rec_a, rec_b = cells_a[min(cells_a)].record, cells_b[min(cells_b)].record
    first = base["seeds"][0]
    rows = []
    for metric in names:
        if spec.compared(metric).per_image == DISCRETE_COLUMN:
            col_a = discrete_column(rec_a, cells_a[first].per_image)
            col_b = discrete_column(rec_b, cells_b[first].per_image)
            if not col_a or not col_b or col_a == col_b == "L_k":
                continue
        rows.append(compare_metric(base, metric, cells_a, cells_b, diagnostics))
    return rows



def paired_comparisons(inputs: list[CellData], datasets: list[str], models: list[str],
                       diagnostics: Diagnostics | None = None) -> list[dict]:
    """Every comparison row of the study: per dataset (in ``datasets`` order), the pairs of
    :func:`single_axis_pairs` in ``models`` order, the rows of :func:`compare_pair` for each.

    Raises:
        ValueError: a model's seeds disagree on its configuration (:func:`model_record`), or a per-image
            comparison is not on the same test images.
    """
    by_model: dict[tuple[str, str], dict[int, CellData]] = {}
    for c in inputs:
        by_model.setdefault((c.cell[0], c.cell[1]), {})[int(c.cell[2])] = c
    rows = []
    for d in datasets:
        records = {m: model_record(d, m, by_model[(d, m)]) for m in models if (d, m) in by_model}
        for a, b, axis in single_axis_pairs(records, models):
            rows += compare_pair(d, a, b, axis, by_model[(d, a)], by_model[(d, b)], diagnostics)
    return rows
