"""Reading and checking the report's inputs (metrics, per-image estimates, training logs, grids) before anything is
written; the summary frame and the aggregates over seeds."""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vaebench import paths
from vaebench.metrics import spec
from vaebench.metrics.uncertainty import seed_summary

if TYPE_CHECKING:   # pandas is imported where it is used: loading the study (every job) imports this module
    import pandas as pd

CellKey = tuple[str, str, int]

ID_COLUMNS = ["dataset", "model", "seed"]
SUMMARY_COLUMNS = ID_COLUMNS + [
    "test_elbo_nats", "test_recon_nats", "test_kl_nats", "test_nll_iwae_nats", "iwae_k",
    "bits_per_dim", "fid_classifier", "train_seconds",
    "effective_beta", "log_sigma", "lambda", "posterior", "likelihood", "objective", "likelihood_of",
]
SUMMARY_STATS = ("mean", "std", "se", "ci_low", "ci_high", "n_seeds")
LEVEL = 0.95  # confidence level of every interval of the report
CELL_KEY = "cell"
REQUIRED_FIELDS = (
    "dataset", "model", "seed", "architecture", "architecture_params", "latent_dim", "posterior",
    "posterior_params", "likelihood", "likelihood_params", "likelihood_family", "sigma_mode", "data_space",
    "data_treatment", "likelihood_of", "valid_density", "objective", "objective_params", "n_images", "iwae_k",
    "lk_tolerance_nats", CELL_KEY,
)
INPUT_ROLES = ("metrics", "per_image", "train_log", "samples_png", "recon_png")
PER_IMAGE_REQUIRED = ("index", "elbo", "recon", "kl", "L_k", "L_k10")


@dataclass(frozen=True)
class CellData:
    """The inputs of one cell: ``record`` (the metrics file), ``per_image`` (the per-image estimates:
    {name: (N,) array}, ``index`` int64, the rest float64 nats per image), ``log`` (the training log, one
    row per epoch) and ``files`` (the cell's input paths by role, see :data:`INPUT_ROLES`)."""

    cell: CellKey
    record: dict
    log: "pd.DataFrame"
    files: dict[str, Path]
    per_image: dict[str, np.ndarray]


def check_inputs(study: str, cells: list[CellKey]) -> None:
    """Raise ``FileNotFoundError`` naming the first missing input file of ``cells`` of ``study`` (nothing is read)."""
    for cell in cells:
        files = paths.cell_paths(study, *cell)
        for role in INPUT_ROLES:
            if not files[role].is_file():
                raise FileNotFoundError(f"report input missing for cell {cell} ({role}): {files[role]}")


def read_metrics(path: Path, cell: CellKey) -> dict:
    """The metrics record of ``cell`` read from ``path``.

    Raises:
        ValueError: the file is not a JSON object, lacks a field of :data:`REQUIRED_FIELDS`, or its
            dataset / model / seed disagree with ``cell``.
    """
    dataset, model, seed = cell
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(rec).__name__}")
    found = (rec.get("dataset"), rec.get("model"), rec.get("seed"))
    same_seed = isinstance(found[2], int) and not isinstance(found[2], bool) and found[2] == int(seed)
    if (str(found[0]), str(found[1])) != (dataset, model) or not same_seed:
        raise ValueError(f"{path} describes cell {found}, expected {(dataset, model, seed)}")
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"{path} lacks the field(s) {', '.join(missing)} (written by an older evaluate "
                         "stage? rerun evaluate for this cell)")
    return rec


def read_per_image(path: Path, n_images: Any = None) -> dict[str, np.ndarray]:
    """The per-image estimates of one cell: {name: (N,) array}, ``index`` as int64, every other array float64.

    Raises:
        ValueError: the file is not a readable npz, lacks an array of :data:`PER_IMAGE_REQUIRED`, holds an
            array that is not 1-D or not of the length of ``index``, or N disagrees with ``n_images``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable npz file: {exc}") from None
    missing = [k for k in PER_IMAGE_REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the array(s) {', '.join(missing)} (written by an older evaluate stage? "
                         "rerun evaluate for this cell)")
    n = arrays["index"].shape[0] if arrays["index"].ndim == 1 else -1
    bad = [f"{k} {v.shape}" for k, v in arrays.items() if v.ndim != 1 or v.shape[0] != n]
    if bad:
        raise ValueError(f"{path}: every array must be 1-D with one value per test image like index; got "
                         + ", ".join(bad))
    if is_number(n_images) and int(n_images) != n:
        raise ValueError(f"{path} holds {n} images but the metrics file says n_images = {n_images}")
    return {k: (v.astype(np.int64) if k == "index" else v.astype(np.float64)) for k, v in arrays.items()}


def read_cells(study: str, cells: list[CellKey]) -> list[CellData]:
    """Every input of ``cells`` of ``study``, in the given order; all files are checked to exist before any is read.

    Raises:
        FileNotFoundError: an input file is missing (the message names it).
        ValueError: a metrics or per-image file is invalid or names another cell (see :func:`read_metrics`,
            :func:`read_per_image`).
    """
    import pandas as pd

    check_inputs(study, cells)
    out = []
    for cell in cells:
        files = paths.cell_paths(study, *cell)
        record = read_metrics(files["metrics"], cell)
        per_image = read_per_image(files["per_image"], record.get("n_images"))
        out.append(CellData(cell, record, pd.read_csv(files["train_log"]), {r: files[r] for r in INPUT_ROLES},
                            per_image))
    return out


def fid_unavailable(records: list[dict], dataset: str, model: str | None = None) -> str | None:
    """Why ``dataset`` (and ``model``, when given) has no classifier-feature FID: the first non-empty
    ``fid_classifier_unavailable`` of its metrics records (the evaluate stage's reason, e.g. 'frey_face has no
    labels: no classifier, so no classifier-feature FID'); None when its cells have the FID (or predate the field)."""
    for r in records:
        reason = r.get("fid_classifier_unavailable")
        if r.get("dataset") == dataset and (model is None or r.get("model") == model) and isinstance(reason, str) \
                and reason:
            return reason
    return None



def flatten_for_csv(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened to dotted keys (``{"objective_params": {"beta": 1}}`` ->
    ``{"objective_params.beta": 1}``); lists become JSON text (one CSV cell); an empty dict vanishes."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_for_csv(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def summary_frame(records: list[dict], include_cell: bool = False) -> "pd.DataFrame":
    """One row per metrics record: :data:`SUMMARY_COLUMNS` first, then every other (flattened) field, sorted."""
    import pandas as pd

    rows = []
    for rec in records:
        rec = dict(rec)
        cell = rec.pop(CELL_KEY, None)
        row = flatten_for_csv(rec)
        if include_cell and isinstance(cell, dict):
            row.update(flatten_for_csv(cell, CELL_KEY + "."))
        rows.append(row)
    extra = sorted({k for r in rows for k in r} - set(SUMMARY_COLUMNS))
    columns = SUMMARY_COLUMNS + extra
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)



def is_number(v: Any) -> bool:
    """True for ints and floats (numpy ones included), False for booleans and anything else."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def numeric_metric_keys(records: list[dict]) -> list[str]:
    """The metrics aggregated over seeds (:func:`vaebench.metrics.spec.aggregated_keys`) whose non-null values
    in ``records`` are all numbers (at least one), sorted."""
    keys = []
    for k in spec.aggregated_keys():
        values = [r.get(k) for r in records if r.get(k) is not None]
        if values and all(is_number(v) for v in values):
            keys.append(k)
    return keys


def summarise_seeds(values: list[Any]) -> dict:
    """The summary over seeds of one metric: {mean, std, se, ci_low, ci_high, n_seeds[, n_excluded]}."""
    given = [float(v) for v in values if v is not None]
    finite = [v for v in given if math.isfinite(v)]
    if finite:
        summary = seed_summary(finite, level=LEVEL)
        entry = {k: summary[k] for k in SUMMARY_STATS}
    else:
        entry = {k: None for k in SUMMARY_STATS} | {"n_seeds": 0}
    if len(finite) < len(given):
        entry["n_excluded"] = len(given) - len(finite)
    return entry


def aggregate_over_seeds(records: list[dict]) -> dict:
    """``{dataset: {model: {metric: summary}}}`` over the seeds of each dataset x model, where summary is
    :func:`summarise_seeds` (mean, std, se, ci_low, ci_high, n_seeds[, n_excluded])."""
    keys = numeric_metric_keys(records)
    out: dict = {}
    for rec in records:
        out.setdefault(str(rec["dataset"]), {}).setdefault(str(rec["model"]), [])
    for dataset, by_model in out.items():
        for model in list(by_model):
            cell_records = [r for r in records if r["dataset"] == dataset and r["model"] == model]
            stats = {}
            for k in keys:
                values = [r[k] for r in cell_records if r.get(k) is not None]
                if values:
                    stats[k] = summarise_seeds(values)
            by_model[model] = stats
    return out


def headline(aggregate: dict) -> dict:
    """``{dataset: {model: {comparison name: mean over seeds}}}`` of the compared metrics of
    :mod:`vaebench.metrics.spec` (nll, elbo, kl, fid, ...; units as declared there, rounded to 4 decimals): the
    few columns per model that ``dvc metrics show`` prints (the whole aggregate is metrics.json)."""
    import math

    from vaebench.metrics import spec

    names = {spec.compared(n).key: n for n in spec.compared_names()}
    return {d: {m: {names[k]: round(stat["mean"], 4) for k, stat in stats.items()
                    if k in names and stat.get("mean") is not None and math.isfinite(stat["mean"])}
                for m, stats in by_model.items()}
            for d, by_model in aggregate.items()}
