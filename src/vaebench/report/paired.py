"""Paired comparisons of the models of a study that differ in exactly one component.

For each dataset, every pair of models (A before B in the study's order) whose resolved configurations differ
in exactly one axis of :data:`AXES` (the component's name or any of its settings, from the metrics fields
``<axis>`` and ``<axis>_params``; ``latent_dim`` counts as an axis) answers one question, e.g. "which decoder
variance is better" for a pair that differs only in the likelihood. Each pair is compared over the training
seeds both models have (paired by seed value) and, for the per-image metrics, over the same test images
(the ``index`` arrays of the per-image files must be equal):

* ``nll`` (-L_k, lower is better) and ``elbo`` (higher is better), per image, only when both models have
  the same ``data_space`` and both are valid densities (``valid_density``); otherwise a row says why not;
* ``nll_discretised``: the discrete likelihood of the 8-bit images, -L_k_discretised of a Gaussian decoder
  or -L_k of a decoder whose ``data_space`` is already ``discrete``, when both models have one and both are
  valid densities (not repeated when both are discrete decoders: then it is ``nll``);
* ``fid`` (``fid_classifier`` per seed, lower is better) for every pair.

Statistics: :func:`vaebench.metrics.uncertainty.paired_difference` (per-image metrics) and
:func:`~vaebench.metrics.uncertainty.paired_difference_scalar` (FID): diff = mean over seeds of A - B,
its standard errors over images and over seeds, a 95% interval (Student t over seeds; normal over images
with a single seed) and a verdict ("A better" / "B better" when the interval excludes 0, else
"inconclusive"). Units: nats per image for the likelihoods, FID unitless.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vaebench.metrics.uncertainty import paired_difference, paired_difference_scalar
from vaebench.report.collect import LEVEL, CellData, flatten, is_number
from vaebench.report.flags import Diagnostics

AXES = ("architecture", "latent_dim", "posterior", "likelihood", "objective")
# metric -> (label, higher is better); the order of the rows of one pair
METRICS: dict[str, tuple[str, bool]] = {
    "nll": ("test NLL = -L_k (nats/image)", False),
    "elbo": ("test ELBO (nats/image)", True),
    "nll_discretised": ("discretised NLL, 8-bit (nats/image)", False),
    "fid": ("FID (classifier features)", False),
}
LIKELIHOOD_METRICS = ("nll", "elbo", "nll_discretised")
SPACE_TEXT = {
    "binarised": "a likelihood of binarised images",
    "dequantised": "a density of dequantised 8-bit images",
    "discrete": "a discrete likelihood of 8-bit images",
}
NOT_COMPARED = "not compared"
# Stage settings of the cell records compared between the two models of a pair (reported, not an axis).
CELL_SECTIONS = ("train", "evaluate", "data")


# ------------------------------------------------------------------------------------------------
# Which pairs

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
    """The axes of :data:`AXES` (in that order) on which the metrics records ``a`` and ``b`` differ."""
    return [axis for axis in AXES if axis_value(a, axis) != axis_value(b, axis)]


def other_differences(a: dict, b: dict) -> list[str]:
    """Stage settings of the cell records (``cell.train``, ``cell.evaluate``, ``cell.data``) that differ
    between two models, as 'train.lr: 0.001 vs 0.0005' (A's value first); empty when none."""
    fa = flatten({s: (a.get("cell") or {}).get(s) or {} for s in CELL_SECTIONS})
    fb = flatten({s: (b.get("cell") or {}).get(s) or {} for s in CELL_SECTIONS})
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


# ------------------------------------------------------------------------------------------------
# One pair

def discrete_column(record: dict, per_image: dict[str, np.ndarray]) -> str | None:
    """The per-image L_k of a model's discrete 8-bit likelihood: 'L_k' when its ``data_space`` is discrete,
    'L_k_discretised' when the per-image file has that column (Gaussian decoders), else None."""
    if record.get("data_space") == "discrete":
        return "L_k"
    return "L_k_discretised" if "L_k_discretised" in per_image else None


def _invalid_reason(a: str, rec_a: dict, b: str, rec_b: dict) -> str | None:
    invalid = [m for m, r in ((a, rec_a), (b, rec_b)) if r.get("valid_density") is False]
    if not invalid:
        return None
    return f"not a normalised density: {', '.join(invalid)} (valid_density = false)"


def _space_reason(a: str, rec_a: dict, b: str, rec_b: dict) -> str | None:
    sa, sb = rec_a.get("data_space"), rec_b.get("data_space")
    if sa == sb:
        return None
    return (f"different data spaces: {a} is {SPACE_TEXT.get(sa, f'in data space {sa}')}, "
            f"{b} {SPACE_TEXT.get(sb, f'in data space {sb}')}")


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
    keys = ("diff", "se_images", "se_seeds", "ci_low", "ci_high", "level", "interval_basis", "df", "n_seeds",
            "n_images", "verdict", "diff_per_seed", "se_per_seed")
    if result is None:
        return {k: None for k in keys} | {"verdict": NOT_COMPARED, "level": LEVEL}
    return {k: result[k] for k in keys}


def _row(base: dict, metric: str, result: dict | None = None, reason: str | None = None,
         lk_not_converged: list[str] | None = None) -> dict:
    label, higher = METRICS[metric]
    row = {**base, "metric": metric, "metric_label": label, "higher_is_better": higher,
           "compared": result is not None, "reason": reason, **_stats_keys(result),
           "lk_not_converged": list(lk_not_converged or [])}
    if result is None:
        row["n_seeds"] = 0
    verdict = row["verdict"]
    row["better"] = base["model_a"] if verdict == "A better" else base["model_b"] if verdict == "B better" else None
    return row


def compare_pair(dataset: str, a: str, b: str, axis: str, cells_a: dict[int, CellData],
                 cells_b: dict[int, CellData], diagnostics: Diagnostics | None = None) -> list[dict]:
    """The comparison rows of one pair (see the module docstring), A - B, in the order of :data:`METRICS`.

    Args:
        dataset, a, b, axis: the pair and the one axis on which its models differ.
        cells_a, cells_b: {seed: CellData} of each model; the seeds both have are paired by value.
        diagnostics: the study's :class:`~vaebench.report.flags.Diagnostics`; a likelihood row lists in
            ``lk_not_converged`` the models whose L_k column used is flagged (its difference may be bias).
    Returns:
        Rows {"dataset", "model_a", "model_b", "axis", "value_a", "value_b", "other_differences", "seeds",
        "metric", "metric_label", "higher_is_better", "compared", "reason" (why not compared, else None),
        "diff", "se_images", "se_seeds", "ci_low", "ci_high", "level", "interval_basis", "df", "n_seeds",
        "n_images", "verdict" ('A better' / 'B better' / 'inconclusive' / 'inconclusive (one seed)' /
        'not compared'), "better" (the better model or None), "diff_per_seed", "se_per_seed",
        "lk_not_converged"}; undefined statistics are None.
    Raises:
        ValueError: the per-image files of a per-image comparison are on different test images.
    """
    seeds = sorted(set(cells_a) & set(cells_b))
    rec_a, rec_b = cells_a[min(cells_a)].record, cells_b[min(cells_b)].record
    base = {"dataset": dataset, "model_a": a, "model_b": b, "axis": axis, "value_a": axis_text(rec_a, axis),
            "value_b": axis_text(rec_b, axis), "other_differences": other_differences(rec_a, rec_b),
            "seeds": seeds}
    if not seeds:
        return [_row(base, m, reason="no training seed in common") for m in METRICS]
    pairs = [(cells_a[s], cells_b[s]) for s in seeds]
    diag = diagnostics or Diagnostics()

    def per_image(metric: str, col_a: str, col_b: str, value: Callable[[np.ndarray], np.ndarray],
                  flag_lk: bool) -> dict:
        _check_same_images(dataset, pairs)
        higher = METRICS[metric][1]
        try:
            result = paired_difference([value(ca.per_image[col_a]) for ca, _ in pairs],
                                       [value(cb.per_image[col_b]) for _, cb in pairs],
                                       level=LEVEL, higher_is_better=higher)
        except ValueError as exc:   # a non-finite per-image value, or a single image
            return _row(base, metric, reason=str(exc))
        bad = [m for m, col in ((a, col_a), (b, col_b)) if flag_lk and diag.not_converged(dataset, m, col)]
        return _row(base, metric, result, lk_not_converged=bad)

    rows = []
    invalid = _invalid_reason(a, rec_a, b, rec_b)
    reason = "; ".join(r for r in (invalid, _space_reason(a, rec_a, b, rec_b)) if r)
    if reason:
        rows += [_row(base, "nll", reason=reason), _row(base, "elbo", reason=reason)]
    else:
        rows.append(per_image("nll", "L_k", "L_k", np.negative, flag_lk=True))
        rows.append(per_image("elbo", "elbo", "elbo", np.asarray, flag_lk=False))
    col_a, col_b = discrete_column(rec_a, pairs[0][0].per_image), discrete_column(rec_b, pairs[0][1].per_image)
    if col_a and col_b and not (col_a == col_b == "L_k"):
        if any(col_a not in ca.per_image or col_b not in cb.per_image for ca, cb in pairs):
            rows.append(_row(base, "nll_discretised", reason="a seed lacks the discrete likelihood column"))
        elif invalid:
            rows.append(_row(base, "nll_discretised", reason=invalid))
        else:
            rows.append(per_image("nll_discretised", col_a, col_b, np.negative, flag_lk=True))

    fid = [(ca.record.get("fid_classifier"), cb.record.get("fid_classifier")) for ca, cb in pairs]
    fid = [(fa, fb) for fa, fb in fid if is_number(fa) and is_number(fb)]
    if not fid:
        rows.append(_row(base, "fid", reason="no FID for a common seed"))
    else:
        try:
            result = paired_difference_scalar([f[0] for f in fid], [f[1] for f in fid], level=LEVEL,
                                              higher_is_better=False)
            rows.append(_row(base, "fid", result))
        except ValueError as exc:    # a non-finite FID
            rows.append(_row(base, "fid", reason=str(exc)))
    return rows


# ------------------------------------------------------------------------------------------------
# Every pair of a study

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
