"""The report's tables and text, as pandas DataFrames (cells are strings) or lists of sentences.

Everything here reads structured fields of the metrics records, through the frame of
:func:`vaebench.report.collect.summary_frame` with ``include_cell=True`` (one row per cell, the cell's
resolved configuration as ``cell.train.*``, ``cell.evaluate.*``, ``cell.data.*`` columns), and the
aggregate of :func:`vaebench.report.collect.aggregate_over_seeds`. No text is parsed.

Units: likelihood-type numbers are nats per image, bits/dim bits per dimension, times seconds.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vaebench.report import published
from vaebench.report.collect import is_number

# (header, metric key, format) of the results table; units in the headers.
RESULT_COLUMNS = [
    ("ELBO (nats/image)", "test_elbo_nats", ".2f"),
    ("recon. NLL (nats/image)", "test_recon_nats", ".2f"),
    ("KL (nats/image)", "test_kl_nats", ".2f"),
    ("test NLL = -L_k (nats/image)", "test_nll_iwae_nats", ".2f"),
    ("bits/dim", "bits_per_dim", ".4f"),
    ("FID (classifier features)", "fid_classifier", ".2f"),
    ("effective beta", "effective_beta", ".3g"),
    ("log sigma", "log_sigma", ".3f"),
    ("GECO lambda", "lambda", ".3g"),
    ("train time (s)", "train_seconds", ".0f"),
]
# Per data space: how bits/dim relate to the NLL (and what the NLL is a likelihood of).
BITS_CONVENTION = {
    "dequantised": ("bits/dim = (NLL + D ln 256) / (D ln 2), a bound on the 8-bit data via uniform "
                    "dequantisation (D = C*H*W)."),
    "discrete": "bits/dim = NLL / (D ln 2), an exact discrete likelihood of the 8-bit data (D = C*H*W).",
    "binarised": ("the NLL is a likelihood of the binarised images (dynamic binarisation in training, the test "
                  "set binarised once with a fixed seed), not of the grey levels; bits/dim, where given, are per "
                  "binary pixel."),
}
# Stage settings (keys of the cell record) compared between models; a model whose value differs from
# the others' is listed under the protocol.
CELL_SECTIONS = ("train", "evaluate")
NOT_A_DENSITY = "not a normalised density"


# ------------------------------------------------------------------------------------------------
# Formatting helpers

def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_false(v: Any) -> bool:
    """A boolean field that is set and false (a missing value is not false)."""
    return not _missing(v) and not bool(v)


def plain(v: Any) -> str:
    """A value as short text: integral floats without '.0', everything else via ``str``."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def unique(df: pd.DataFrame, col: str, spec: str | None = None) -> str:
    """The distinct non-null values of ``col`` joined with ' / ' in order of appearance ('n/a' when none);
    numbers are formatted with ``spec`` when given."""
    if col not in df.columns:
        return "n/a"
    values: list[str] = []
    for v in df[col].tolist():
        if _missing(v):
            continue
        s = format(v, spec) if spec and is_number(v) else plain(v)
        if s not in values:
            values.append(s)
    return " / ".join(values) if values else "n/a"


def _num(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def format_mean_std(stat: dict | None, spec: str, sign: float = 1.0) -> str:
    """'mean ± std' of an aggregate entry (std left out when it is null, i.e. with one seed); 'n/a'
    without a value. ``sign`` multiplies the mean (e.g. -1 to show -ELBO)."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = _num(sign * stat["mean"], spec)
    if stat.get("std") is not None:
        text += " ± " + _num(stat["std"], spec)
    return text


def _rows(frame: pd.DataFrame, dataset: str | None = None, model: str | None = None) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    if dataset is not None:
        mask &= frame["dataset"] == dataset
    if model is not None:
        mask &= frame["model"] == model
    return frame[mask]


def _params_text(frame: pd.DataFrame, prefix: str) -> str:
    """'key = value, ...' of the flattened ``<prefix>.*`` columns (e.g. 'objective_params'), '' when none."""
    cols = [c for c in frame.columns if c.startswith(prefix + ".")]
    parts = []
    for c in cols:
        value = unique(frame, c)
        if value != "n/a":
            parts.append(f"{c[len(prefix) + 1:]} = {value}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------
# Models and results

def models_table(dataset: str, models: list[str], frame: pd.DataFrame) -> pd.DataFrame:
    """What each model of ``dataset`` is: architecture, latent size, posterior, likelihood, objective, their
    settings (from the ``*_params`` fields), data treatment and what the test number is a likelihood of."""
    rows = []
    for m in models:
        sub = _rows(frame, dataset, m)
        settings = []
        for axis in ("architecture", "posterior", "likelihood", "objective"):
            text = _params_text(sub, f"{axis}_params")
            if text:
                settings.append(f"{axis}: {text}")
        rows.append({
            "model": m,
            "architecture": unique(sub, "architecture"),
            "latent_dim": unique(sub, "latent_dim"),
            "posterior": unique(sub, "posterior"),
            "likelihood": unique(sub, "likelihood"),
            "objective": unique(sub, "objective"),
            "settings": "; ".join(settings) or "defaults",
            "data_treatment": unique(sub, "data_treatment"),
            "likelihood_of": unique(sub, "likelihood_of"),
        })
    return pd.DataFrame(rows)


def results_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of each result per model of ``dataset`` (columns of :data:`RESULT_COLUMNS`,
    units in the headers; the -L_k header names the k values used); columns without any value are dropped."""
    agg = aggregate.get(dataset, {})
    ks = sorted({int(k) for k in _rows(frame, dataset)["iwae_k"].dropna()})
    rows = []
    for m in models:
        row = {"model": m, "seeds": max((s.get("n_seeds", 0) for s in agg.get(m, {}).values()), default=0)}
        for header, key, spec in RESULT_COLUMNS:
            if key == "test_nll_iwae_nats" and ks:
                header = f"test NLL = -L_k, k = {'/'.join(map(str, ks))} (nats/image)"
            row[header] = format_mean_std(agg.get(m, {}).get(key), spec)
        rows.append(row)
    table = pd.DataFrame(rows)
    keep = [c for c in table.columns if c in ("model", "seeds") or (table[c] != "n/a").any()]
    return table[keep]


def invalid_density_models(dataset: str, models: list[str], frame: pd.DataFrame) -> list[str]:
    """Models of ``dataset`` whose likelihood is flagged ``valid_density = false`` in any cell."""
    out = []
    for m in models:
        if any(_is_false(f) for f in _rows(frame, dataset, m)["valid_density"].tolist()):
            out.append(m)
    return out


def density_note(models: list[str], frame: pd.DataFrame) -> str:
    """The warning under a results table for models whose test numbers are not a normalised density."""
    liks = " / ".join(dict.fromkeys(unique(frame[frame["model"] == m], "likelihood") for m in models))
    return (f"{', '.join(models)} ({liks}): the test ELBO, NLL and bits/dim are {NOT_A_DENSITY} of the test "
            "images (valid_density = false; see the protocol); treat them as optimistic and do not rank them "
            "against the other models on these columns.")


# ------------------------------------------------------------------------------------------------
# Comparison with published numbers

def train_k(frame: pd.DataFrame, model: str) -> int:
    """Importance samples per image in ``model``'s training objective: ``objective_params.k`` (1 for a plain
    ELBO, i.e. when the objective has no ``k``)."""
    col = "objective_params.k"
    if col not in frame.columns:
        return 1
    values = [v for v in _rows(frame, model=model)[col].tolist() if not _missing(v)]
    return int(values[0]) if values else 1


def comparison_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean ± std over seeds) next to the published numbers of :mod:`vaebench.report.published` for
    the models of the study, one row per published number; empty when none concerns them. The published
    rows of IWAE-style tables are picked by our training k (:func:`train_k`)."""
    ks = {m: train_k(frame, m) for m in models}
    rows = []
    for e in published.entries_for(dataset, models, ks):
        metric = published.METRICS[e["metric"]]
        stat = aggregate.get(dataset, {}).get(e["model"], {}).get(metric["ours"])
        spec = ".3g" if e["metric"] == "effective_beta" else ".2f"
        rows.append({
            "model": e["model"],
            "metric": metric["label"],
            "ours (mean ± std)": format_mean_std(stat, spec, metric["sign"]),
            "published": (e["bound"] or "") + plain(e["value"]),
            "published setting": e["setting"],
            "source": e["source"],
            "our protocol": _our_protocol(e["metric"], _rows(frame, dataset, e["model"])),
            "protocol differences": e["protocol"],
        })
    return pd.DataFrame(rows)


def _our_protocol(metric: str, sub: pd.DataFrame) -> str:
    u = lambda c: unique(sub, c)  # noqa: E731
    if metric in ("neg_elbo_nats", "reported_loss_nats", "mean_kl_nats"):
        return (f"single-sample ELBO on {u('elbo_n_images')} test images; {u('data_treatment')}; "
                f"{u('epochs')} epoch(s)")
    if metric == "nll_nats":
        return (f"-L_k with k = {u('iwae_k')} on {u('iwae_n_images')} test images; likelihood of "
                f"{u('likelihood_of')}; {u('epochs')} epoch(s)")
    if metric == "fid":
        return f"classifier-feature FID, N = {u('fid_n')}: {u('fid_reference')}"
    if metric == "effective_beta":
        return f"effective beta at the end of training ({u('epochs')} epoch(s))"
    return ""


def comparison_notes(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Split the long, shared protocol notes out of a :func:`comparison_table`.

    Returns ``(table, notes, sources)``: the table with 'protocol differences' replaced by 'note <i>', the
    distinct notes in order (note i = ``notes[i - 1]``) and 'key: reference' lines of the sources cited.
    """
    table = table.copy()
    notes = list(dict.fromkeys(table["protocol differences"]))
    table["protocol differences"] = [f"note {notes.index(n) + 1}" for n in table["protocol differences"]]
    used = [k for k in published.SOURCES if any(str(s).startswith(k) for s in table["source"])]
    return table, notes, [f"{k}: {published.SOURCES[k]}" for k in used]


# ------------------------------------------------------------------------------------------------
# Protocol (from the cells' configuration records and the metrics fields, nothing assumed)

def _setting_text(key: str, value: Any) -> str:
    """A stage setting for the protocol; null evaluation sizes mean the whole test split."""
    if _missing(value):
        return "null (the whole test split)" if key in ("elbo_n", "iwae_n") else "null"
    if isinstance(value, bool):
        return str(value).lower()
    return plain(value)


def _model_setting(frame: pd.DataFrame, model: str, col: str) -> str:
    values = [_setting_text(col.rsplit(".", 1)[-1], v) for v in _rows(frame, model=model)[col].tolist()]
    return " / ".join(dict.fromkeys(values)) if values else "n/a"


def common_settings(frame: pd.DataFrame, models: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The stage settings of the cell records (``cell.train.*``, ``cell.evaluate.*``) shared by most models.

    Returns ``(common, differing)``: ``common`` maps 'train.lr', 'evaluate.iwae_k', ... to the value of
    most models (ties: the first model in grid order), as protocol text; ``differing`` maps a model to
    {setting: its value} for the settings where it differs from ``common``.
    """
    common: dict[str, str] = {}
    differing: dict[str, dict[str, str]] = {}
    for section in CELL_SECTIONS:
        cols = sorted(c for c in frame.columns if c.startswith(f"cell.{section}."))
        for col in cols:
            key = col[len("cell."):]
            per_model = {m: _model_setting(frame, m, col) for m in models}
            counts: dict[str, int] = {}
            for v in per_model.values():
                counts[v] = counts.get(v, 0) + 1
            top = max(counts.values(), default=0)
            value = next((v for v in per_model.values() if counts[v] == top), "n/a")
            common[key] = value
            for m, v in per_model.items():
                if v != value:
                    differing.setdefault(m, {})[key] = v
    return common, differing


def setting_differences(frame: pd.DataFrame, models: list[str]) -> list[str]:
    """One line per model whose train / evaluate settings differ from the other models' (empty when none)."""
    common, differing = common_settings(frame, models)
    return [f"{m}: " + ", ".join(f"{k} = {v} (others: {common[k]})" for k, v in diffs.items())
            for m, diffs in differing.items()]


def protocol_items(frame: pd.DataFrame, datasets: list[str], models: list[str], seeds: list) -> list[str]:
    """The protocol as sentences: seeds, training, ELBO, -L_k, per-likelihood conventions, FID, grids, data.

    Settings come from the cells' configuration records (``cell.*`` columns) and the metrics fields; where
    a model's setting differs from the others', the sentence gives the others' value ("per-model
    differences below", see :func:`setting_differences`).
    """
    common, differing = common_settings(frame, models)
    c = lambda k: common.get(k, "n/a")  # noqa: E731
    u = lambda col, df=frame: unique(df, col)  # noqa: E731
    more = " (per-model differences below)" if differing else ""
    items = [
        f"Seeds: {', '.join(map(str, seeds))}. Mean ± sample std (ddof = 1) over seeds; the std is null "
        "(not 0) with a single seed.",
        f"Training: {c('train.epochs')} epoch(s), batch size {c('train.batch_size')}, learning rate "
        f"{c('train.lr')}{more}; epochs run per cell: {u('epochs')}; device: {u('device')}.",
        f"ELBO: single-sample estimate (one z ~ q(z|x) per image) averaged over the first "
        f"{u('elbo_n_images')} test images (evaluate.elbo_n = {c('evaluate.elbo_n')}); the reconstruction "
        "NLL and KL columns are the two terms of the same estimate.",
        f"Test NLL: -L_k, the importance-weighted bound of Burda et al. (2016) with k = {u('iwae_k')} samples "
        f"per image (evaluate.iwae_k = {c('evaluate.iwae_k')}) on the first {u('iwae_n_images')} test images "
        f"(evaluate.iwae_n = {c('evaluate.iwae_n')}); an upper bound on -log p(x) that tightens as k grows, "
        "computed with each model's own posterior density (posterior family per model in the Models table).",
        f"Test data: mapped once into each model's data space (binarised or dequantised, see below) with seed "
        f"evaluate.seed = {c('evaluate.seed')}, so every model of a data space is scored on the same test data; "
        "the same seed draws the prior samples.",
    ]
    items += likelihood_items(frame)
    items += fid_items(frame, datasets, c('evaluate.fid_n'))
    items.append(f"Image grids: {c('evaluate.grid_n')} images per grid (evaluate.grid_n).")
    items += data_items(frame, datasets)
    return items


def likelihood_items(frame: pd.DataFrame) -> list[str]:
    """Per likelihood (registry name) of the study: its models, data treatment, what its number is a
    likelihood of, the bits/dim convention of its ``data_space``, and notes on ``sigma_mode`` /
    ``valid_density``."""
    items = []
    for lik in dict.fromkeys(frame["likelihood"].dropna().astype(str)):
        sub = frame[frame["likelihood"].astype(str) == lik]
        models = ", ".join(dict.fromkeys(sub["model"].astype(str)))
        spaces = list(dict.fromkeys(sub["data_space"].dropna().astype(str)))
        convention = " ".join(BITS_CONVENTION.get(s, f"data space '{s}': see the metrics files for the bits/dim "
                                                     "convention.") for s in spaces)
        items.append(f"'{lik}' decoders ({models}): {unique(sub, 'likelihood_description')}; data "
                     f"{unique(sub, 'data_treatment')}; likelihood of {unique(sub, 'likelihood_of')}; "
                     f"{convention}")
        modes = set(sub["sigma_mode"].dropna().astype(str))
        valid = not any(_is_false(v) for v in sub["valid_density"].tolist())
        if "optimal_shared" in modes and valid:
            items.append(f"Optimal sigma ('{lik}'): at test time sigma^2 is the running average of the last "
                         "training epoch's MSE (fixed, so the test ELBO/NLL are normalised densities).")
        if not valid:
            why = ("each test image uses its own MSE as variance, so the variance depends on the image itself; "
                   if "optimal_per_image" in modes else "")
            items.append(f"'{lik}' ({models}): {why}its test ELBO, NLL and bits/dim are {NOT_A_DENSITY} "
                         "evaluation (valid_density = false); treat them as optimistic.")
    return items


def _acc(v: Any) -> str:
    return format(float(v), ".4f") if is_number(v) and math.isfinite(float(v)) else "n/a"


def fid_items(frame: pd.DataFrame, datasets: list[str], fid_n_setting: str = "n/a") -> list[str]:
    """Per dataset: the FID protocol and its classifier (accuracies, epochs, feature dimension) as recorded
    in the metrics files."""
    items = []
    for d in datasets:
        sub = _rows(frame, d)
        bits = [f"test accuracy {' / '.join(dict.fromkeys(_acc(v) for v in sub['classifier_test_accuracy']))}"
                if "classifier_test_accuracy" in sub else "test accuracy n/a"]
        if "classifier_val_accuracy" in sub and any(_acc(v) != "n/a" for v in sub["classifier_val_accuracy"]):
            vals = dict.fromkeys(_acc(v) for v in sub["classifier_val_accuracy"] if _acc(v) != "n/a")
            bits.append(f"validation accuracy {' / '.join(vals)}")
        if unique(sub, "classifier_epochs") != "n/a":
            bits.append(f"{unique(sub, 'classifier_epochs')} epoch(s)")
        if unique(sub, "classifier_feature_dim") != "n/a":
            bits.append(f"feature dimension {unique(sub, 'classifier_feature_dim')}")
        items.append(
            f"FID ({d}): Frechet distance in the feature space of a small CNN classifier trained on the {d} "
            f"training split ({', '.join(bits)}), N = {unique(sub, 'fid_n')} (evaluate.fid_n = {fid_n_setting}): "
            f"{unique(sub, 'fid_reference')}; samples are decoder means of z ~ p(z), quantised to 8 bits. FID "
            "values are only comparable at equal N with the same extractor, and are NOT comparable with the "
            "Inception-v3 FIDs of papers.")
    return items


def data_items(frame: pd.DataFrame, datasets: list[str]) -> list[str]:
    """Per dataset: the split (validation size) and subset caps, from the cells' ``cell.data`` records."""
    items = []
    for d in datasets:
        sub = _rows(frame, d)
        text = (f"Data ({d}): test = the official test split; validation = the last "
                f"{unique(sub, 'cell.data.n_validation')} images of the training split, training = the rest.")
        caps = {k: unique(sub, f"cell.data.{k}") for k in ("max_train", "max_validation", "max_test")}
        caps = {k: v for k, v in caps.items() if v != "n/a"}
        if caps:
            text += " Subset sizes: " + ", ".join(f"{k} = {v}" for k, v in caps.items()) + "."
        items.append(text)
    return items


SETTINGS_COLUMNS = ["dataset", "model", "data_treatment", "likelihood_of", "elbo_n_images", "iwae_k",
                    "iwae_n_images", "fid_n", "fid_reference", "epochs", "device"]


def evaluation_settings_table(frame: pd.DataFrame, datasets: list[str], models: list[str]) -> pd.DataFrame:
    """One row per dataset x model: the evaluation settings as recorded in its metrics files."""
    rows = []
    for d in datasets:
        for m in models:
            sub = _rows(frame, d, m)
            rows.append({c: (d if c == "dataset" else m if c == "model" else unique(sub, c))
                         for c in SETTINGS_COLUMNS})
    return pd.DataFrame(rows, columns=SETTINGS_COLUMNS)


def intro_text(datasets: list[str], models: list[str], seeds: list, n_cells: int) -> str:
    """The report's opening paragraph: the grid, what the numbers are and where the raw values live."""
    return (
        f"Grid: datasets {', '.join(datasets)}; models {', '.join(models)}; seeds {', '.join(map(str, seeds))} "
        f"({n_cells} cells). Values are mean ± sample standard deviation (ddof = 1) over seeds; with a single "
        "seed only the value is shown (std is null in metrics.json). Likelihood-type numbers are nats per image "
        "(summed over all pixels of an image); bits/dim are bits per dimension. Per-cell values: summary.csv; "
        "aggregates: metrics.json. The protocol is stated at the end.")

