"""The report's tables and text, as pandas DataFrames (cells are strings) or lists of sentences.

Everything here reads structured fields of the metrics records, through the frame of
:func:`vaebench.report.collect.summary_frame` with ``include_cell=True`` (one row per cell, the cell's
resolved configuration as ``cell.train.*``, ``cell.evaluate.*``, ``cell.data.*`` columns), the aggregate of
:func:`vaebench.report.collect.aggregate_over_seeds` (mean, std, se, 95% interval over seeds), the rows of
:func:`vaebench.report.paired.paired_comparisons` and the :class:`vaebench.report.flags.Diagnostics`.
No text is parsed.

Likelihood numbers are never put in one column across data spaces: the results tables are split by the
``data_space`` field (binarised data, dequantised 8-bit data, discrete 8-bit data), and a model whose
``valid_density`` is false is labelled "not a normalised density" wherever its likelihood appears.

Units: likelihood-type numbers are nats per image, bits/dim bits per dimension, times seconds.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vaebench.report import published
from vaebench.report.collect import LEVEL, is_number
from vaebench.report.flags import RULES, Diagnostics

# Per data space: how bits/dim relate to the NLL (and what the NLL is a likelihood of).
BITS_CONVENTION = {
    "dequantised": ("bits/dim = (NLL + D ln 256) / (D ln 2), a bound on the 8-bit data via uniform "
                    "dequantisation (D = C*H*W)."),
    "discrete": "bits/dim = NLL / (D ln 2), an exact discrete likelihood of the 8-bit data (D = C*H*W).",
    "binarised": ("the NLL is a likelihood of the binarised images (dynamic binarisation in training, the test "
                  "set binarised once with a fixed seed), not of the grey levels; bits/dim, where given, are per "
                  "binary pixel."),
}
# The results tables, one per data space, in this order (other spaces follow in order of appearance).
SPACE_ORDER = ("binarised", "dequantised", "discrete")
SPACE_TITLES = {
    "binarised": "binarised data (Bernoulli-type decoders)",
    "dequantised": "8-bit data through dequantisation (continuous decoders)",
    "discrete": "8-bit data, discrete likelihood",
}
SPACE_SHORT = {"binarised": "binarised", "dequantised": "dequantised density", "discrete": "8-bit discrete"}
DISCRETISED_NOTE = (
    "Discretised columns: the same decoder scored as a discrete likelihood of the 8-bit test image, the "
    "probability of each pixel's bin [v/256, (v+1)/256) under the decoder's Gaussian (edge bins open; Salimans "
    "et al. 2017, eq. 2), from the same posterior samples; bits/dim = NLL / (D ln 2) with no offset. A true "
    "likelihood of the 8-bit data, comparable with a categorical decoder's, unlike the dequantisation bound.")
# Stage settings (keys of the cell record) compared between models; a model whose value differs from
# the others' is listed under the protocol.
CELL_SECTIONS = ("train", "evaluate")
NOT_A_DENSITY = "not a normalised density"
CI_TEXT = f"mean ± {LEVEL:.0%} CI over seeds"

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


def format_ci(stat: dict | None, spec: str, sign: float = 1.0) -> str:
    """'mean ± h' with h the half-width of the 95% Student-t interval over seeds (the interval is symmetric:
    mean ± t * se); just 'mean' with one seed (no interval). 'n/a' without a value; ``sign`` = -1 negates the
    mean (e.g. to show -ELBO)."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = _num(sign * stat["mean"], spec)
    if stat.get("ci_low") is not None and stat.get("ci_high") is not None:
        text += " ± " + _num((stat["ci_high"] - stat["ci_low"]) / 2, spec)
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


def n_seeds(aggregate: dict, dataset: str, model: str) -> int:
    """The most seeds any metric of ``model`` on ``dataset`` was averaged over (0 when none)."""
    return max((s.get("n_seeds", 0) for s in aggregate.get(dataset, {}).get(model, {}).values()), default=0)


def space_groups(dataset: str, models: list[str], frame: pd.DataFrame) -> dict[str, list[str]]:
    """``{data_space: [models of dataset]}`` from the ``data_space`` field, spaces in :data:`SPACE_ORDER`
    (others after, in order of appearance), models in grid order; a model whose cells disagree is put under
    its first cell's space."""
    groups: dict[str, list[str]] = {}
    for m in models:
        spaces = [str(v) for v in _rows(frame, dataset, m)["data_space"].tolist() if not _missing(v)]
        if spaces:
            groups.setdefault(spaces[0], []).append(m)
    order = [s for s in SPACE_ORDER if s in groups] + [s for s in groups if s not in SPACE_ORDER]
    return {s: groups[s] for s in order}


def is_invalid_density(frame: pd.DataFrame, dataset: str, model: str) -> bool:
    """Whether any cell of ``model`` on ``dataset`` records ``valid_density = false``."""
    return any(_is_false(v) for v in _rows(frame, dataset, model)["valid_density"].tolist())


def model_label(frame: pd.DataFrame, dataset: str, model: str) -> str:
    """The model's name, with '(not a normalised density)' when its likelihood is not one."""
    return f"{model} ({NOT_A_DENSITY})" if is_invalid_density(frame, dataset, model) else model


def gap_text(entry: dict | None, spec: str = ".2f") -> str:
    """The L_k - L_{k/10} diagnostic of a :func:`vaebench.report.flags.lk_status` entry: 'gap ± SE over
    images', then 'NOT CONVERGED (> tolerance)' when flagged; 'n/a' without an entry."""
    if entry is None or entry.get("gap_nats") is None:
        return "n/a"
    text = _num(entry["gap_nats"], spec)
    if entry.get("gap_se_images") is not None:
        text += " ± " + _num(entry["gap_se_images"], spec)
    if not entry["converged"]:
        text += f" NOT CONVERGED (> {plain(entry['tolerance_nats'])})"
    return text


def _drop_empty(table: pd.DataFrame, keep: tuple[str, ...] = ("model", "seeds")) -> pd.DataFrame:
    """``table`` without the columns that hold no value ('n/a' everywhere), ``keep`` always kept."""
    if table.empty:
        return table
    return table[[c for c in table.columns if c in keep or (table[c] != "n/a").any()]]


def likelihood_table(dataset: str, space: str, models: list[str], aggregate: dict, frame: pd.DataFrame,
                     diagnostics: Diagnostics) -> pd.DataFrame:
    """The likelihood results of the models of one data space: mean ± 95% CI over seeds of the ELBO and
    -L_k, the ELBO's terms, the L_k - L_{k/10} diagnostic (± SE over images, flagged when above the
    tolerance) and bits/dim; for decoders with a discretised column, the same quantities of the discrete 8-bit
    likelihood side by side. Headers name the units, k and the data space; columns without any value are
    dropped. Models whose likelihood is not a normalised density are labelled so."""
    agg = aggregate.get(dataset, {})
    sub = _rows(frame, dataset)
    sub = sub[sub["model"].isin(models)]
    ks = "/".join(dict.fromkeys(plain(k) for k in sub["iwae_k"].dropna())) or "n/a"
    tag = SPACE_SHORT.get(space, space)
    rows = []
    for m in models:
        a = agg.get(m, {})
        rows.append({
            "model": model_label(frame, dataset, m),
            "seeds": str(n_seeds(aggregate, dataset, m)),
            f"ELBO (nats/image; {tag}) [{CI_TEXT}]": format_ci(a.get("test_elbo_nats"), ".2f"),
            "recon. NLL (nats/image)": format_ci(a.get("test_recon_nats"), ".2f"),
            "KL (nats/image)": format_ci(a.get("test_kl_nats"), ".2f"),
            f"NLL = -L_k, k = {ks} (nats/image; {tag}) [{CI_TEXT}]": format_ci(a.get("test_nll_iwae_nats"), ".2f"),
            "L_k - L_{k/10} (nats/image)": gap_text(diagnostics.lk_entry(dataset, m, "L_k")),
            "bits/dim": format_ci(a.get("bits_per_dim"), ".4f"),
            f"discretised ELBO (nats/image; 8-bit) [{CI_TEXT}]": format_ci(a.get("test_elbo_discretised_nats"), ".2f"),
            f"discretised NLL = -L_k (nats/image; 8-bit) [{CI_TEXT}]":
                format_ci(a.get("test_nll_iwae_discretised_nats"), ".2f"),
            "discretised L_k - L_{k/10}": gap_text(diagnostics.lk_entry(dataset, m, "L_k_discretised")),
            "discretised bits/dim": format_ci(a.get("bits_per_dim_discretised"), ".4f"),
        })
    return _drop_empty(pd.DataFrame(rows))


def has_discretised(dataset: str, models: list[str], aggregate: dict) -> bool:
    """Whether any of ``models`` has a discretised likelihood column on ``dataset``."""
    return any("test_nll_iwae_discretised_nats" in aggregate.get(dataset, {}).get(m, {}) for m in models)


def latent_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Latent analysis per model (mean ± 95% CI over seeds): rate = E_x KL(q(z|x)||p(z)), the marginal KL
    KL(q(z)||p(z)) of the aggregate posterior, the mutual information I(x; z) = rate - marginal KL with its
    upper bound log N (N = images of the aggregate posterior), and the active units out of latent_dim."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        a, sub = agg.get(m, {}), _rows(frame, dataset, m)
        bound = unique(sub, "latent_log_n_nats", ".2f")
        rows.append({
            "model": m,
            "seeds": str(n_seeds(aggregate, dataset, m)),
            "rate (nats)": format_ci(a.get("latent_rate_nats"), ".2f"),
            "marginal KL (nats)": format_ci(a.get("latent_marginal_kl_nats"), ".2f"),
            "mutual information (nats)": format_ci(a.get("latent_mutual_info_nats"), ".2f"),
            "log N, bound on MI (N)": f"{bound} ({unique(sub, 'latent_n')})" if bound != "n/a" else "n/a",
            "active units / latent_dim": (format_ci(a.get("active_units"), ".1f") + " / "
                                          + unique(sub, "latent_dim")) if a.get("active_units") else "n/a",
        })
    return _drop_empty(pd.DataFrame(rows))


def _unavailable(sub: pd.DataFrame) -> str | None:
    """'unavailable: <reason>' when the cells of ``sub`` have no classifier-feature FID (the evaluate stage's
    ``fid_classifier_unavailable``, e.g. an unlabelled dataset has no classifier), else None."""
    reason = unique(sub, "fid_classifier_unavailable")
    return None if reason == "n/a" else f"unavailable: {reason}"


def fid_table(dataset: str, models: list[str], aggregate: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """FID per model: of decoder means, mean ± 95% CI over training seeds (each seed's value is itself
    the mean over ``fid_seeds`` sample seeds); its spread over sample seeds (std, mean over training seeds);
    the FID of draws x ~ p(x|z); the dataset's floor (real held-out images) and N; the Inception FID of the
    first sample seed against the whole test split with both N, or why it was not computed. Without a
    classifier (unlabelled dataset) the FID and floor columns read 'unavailable: <reason>', never a number."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        a, sub = agg.get(m, {}), _rows(frame, dataset, m)
        unavailable = _unavailable(sub)
        floor = _num((a.get("fid_floor") or {}).get("mean"), ".2f")   # one reference per dataset: no spread
        rows.append({
            "model": m,
            "seeds": str(n_seeds(aggregate, dataset, m)),
            f"FID, decoder means [{CI_TEXT}]": unavailable or format_ci(a.get("fid_classifier"), ".2f"),
            "std over sample seeds (sample seeds)": (
                f"{_num(a['fid_classifier_std']['mean'], '.2f')} ({unique(sub, 'fid_seeds')})"
                if (a.get("fid_classifier_std") or {}).get("mean") is not None else "n/a"),
            "FID, draws x ~ p(x|z)": format_ci(a.get("fid_classifier_draws"), ".2f"),
            "floor (N real images)": (f"{floor} ({unique(sub, 'fid_floor_n')})" if floor != "n/a" else
                                      "unavailable" if unavailable else "n/a"),
            "N (samples)": unique(sub, "fid_n"),
            "Inception FID (N samples / N test)": (
                f"{format_ci(a.get('fid_inception'), '.2f')} ({unique(sub, 'fid_inception_n')} / "
                f"{unique(sub, 'fid_inception_reference_n')})" if a.get("fid_inception") else
                unique(sub, "fid_inception_status")),
        })
    return _drop_empty(pd.DataFrame(rows))


def beta_convention(dataset: str, model: str, aggregate: dict) -> str:
    """How ``effective_beta`` relates to the model, from which fields it has: 1/lambda for a GECO model
    (a ``lambda`` and an ``effective_beta``), 2 sigma^2 beta for a shared-sigma Gaussian decoder (an
    ``effective_beta`` without ``lambda``), none for GECO+IWAE (``lambda`` without ``effective_beta``)."""
    a = aggregate.get(dataset, {}).get(model, {})
    has_beta, has_lambda = "effective_beta" in a, "lambda" in a
    if has_beta and has_lambda:
        return "1/lambda (GECO: KL + lambda SSE)"
    if has_beta:
        return "2 sigma^2 beta (shared-sigma Gaussian)"
    if has_lambda:
        return "none: the loss weighs no KL (lambda shown)"
    return "n/a"


def training_table(dataset: str, models: list[str], aggregate: dict) -> pd.DataFrame:
    """Per model (mean ± 95% CI over seeds, at the end of training): the effective beta in the "SSE + beta KL"
    convention with the rule that gives it (:func:`beta_convention`), the decoder's log sigma, GECO's lambda
    and constraint moving average C_ma, and the training time."""
    agg = aggregate.get(dataset, {})
    rows = []
    for m in models:
        a = agg.get(m, {})
        rows.append({
            "model": m,
            "seeds": str(n_seeds(aggregate, dataset, m)),
            "effective beta": format_ci(a.get("effective_beta"), ".3g"),
            "beta convention": beta_convention(dataset, m, aggregate),
            "log sigma": format_ci(a.get("log_sigma"), ".3f"),
            "GECO lambda": format_ci(a.get("lambda"), ".3g"),
            "GECO C_ma": format_ci(a.get("geco_constraint_ma"), ".3g"),
            "train time (s)": format_ci(a.get("train_seconds"), ".0f"),
        })
    return _drop_empty(pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
# Paired comparisons and flags

def _verdict_text(row: dict) -> str:
    return f"{row['better']} better" if row.get("better") else str(row["verdict"])


def paired_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """The compared rows of :func:`vaebench.report.paired.paired_comparisons` for ``dataset``: A, B, the axis
    and its two values, the metric, A - B with its standard errors over seeds and over images, the 95%
    interval, the seeds and images used, the verdict (naming the better model) and notes (an L_k that has not
    converged, stage settings that also differ)."""
    out = []
    for r in rows:
        if r["dataset"] != dataset or not r["compared"]:
            continue
        notes = []
        if r["lk_not_converged"]:
            notes.append(f"L_k not converged for {', '.join(r['lk_not_converged'])}: the difference may be bias "
                         "of the bound")
        if r["other_differences"]:
            notes.append("also differ: " + "; ".join(r["other_differences"]))
        ci = (f"[{_num(r['ci_low'], '.3g')}, {_num(r['ci_high'], '.3g')}]"
              if r["ci_low"] is not None else "n/a")
        out.append({
            "A": r["model_a"], "B": r["model_b"],
            "differs in": f"{r['axis']}: {r['value_a']} vs {r['value_b']}",
            "metric": f"{r['metric_label']}, {'higher' if r['higher_is_better'] else 'lower'} is better",
            "A - B": _num(r["diff"], ".3g"),
            "SE (seeds)": _num(r["se_seeds"], ".2g"),
            "SE (images)": _num(r["se_images"], ".2g"),
            f"{LEVEL:.0%} CI of A - B": ci,
            "seeds": str(r["n_seeds"]),
            "images": "n/a" if r["n_images"] is None else str(r["n_images"]),
            "verdict": _verdict_text(r),
            "notes": "; ".join(notes) or "",
        })
    return pd.DataFrame(out)


def not_compared_table(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """The pairs of ``dataset`` with metrics that were not compared: A, B, the axis, the metrics and why
    (one row per pair and reason)."""
    grouped: dict[tuple, list[str]] = {}
    for r in rows:
        if r["dataset"] == dataset and not r["compared"]:
            key = (r["model_a"], r["model_b"], r["axis"], r["reason"])
            grouped.setdefault(key, []).append(r["metric"])
    return pd.DataFrame([{"A": a, "B": b, "differs in": axis, "metrics": ", ".join(ms), "why not": reason}
                         for (a, b, axis, reason), ms in grouped.items()])


def lk_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """One sentence per L_k column of ``dataset`` flagged as not converged (or one saying none is)."""
    items = []
    for e in diagnostics.lk:
        if e["dataset"] != dataset or e["converged"]:
            continue
        se = [f"± {_num(e['gap_se_images'], '.2g')} (SE over images)"] if e["gap_se_images"] is not None else []
        if e["gap_se_seeds"] is not None:
            se.append(f"± {_num(e['gap_se_seeds'], '.2g')} (SE over seeds)")
        items.append(f"{e['model']} ({e['column']}): L_k - L_{{k/10}} = {_num(e['gap_nats'], '.3g')} "
                     f"{' '.join(se)} nats/image with k = {plain(e['iwae_k'])}, above the tolerance "
                     f"{plain(e['tolerance_nats'])}: -L_k has not converged; its NLL and NLL differences "
                     "involving it may be bias of the bound (raise evaluate.iwae_k).")
    if not items:
        items.append("Every L_k converged (L_k - L_{k/10} within evaluate.lk_tolerance_nats).")
    return items


def geco_table(dataset: str, diagnostics: Diagnostics) -> pd.DataFrame:
    """Every GECO-trained cell of ``dataset`` (:func:`vaebench.report.flags.geco_status`): the constraint,
    kappa, the last C_ma and its threshold, lambda, its change over the last epoch, and whether it settled."""
    rows = []
    for e in diagnostics.geco:
        if e["dataset"] != dataset:
            continue
        rows.append({
            "model": e["model"], "seed": str(e["seed"]), "constraint": str(e["constraint"]),
            "kappa": _num(e["kappa"], ".3g"), "C_ma (last)": _num(e["c_ma"], ".4g"),
            "|C_ma| threshold": _num(e["c_ma_threshold"], ".3g"), "lambda (last)": _num(e["lambda"], ".4g"),
            "lambda one epoch earlier": _num(e["lambda_previous"], ".4g"),
            "lambda change": "n/a" if e["lambda_change"] is None else f"{e['lambda_change']:.1%}",
            "settled": "yes" if e["settled"] else "NO: " + "; ".join(e["reasons"]),
        })
    return pd.DataFrame(rows)


def other_flag_items(dataset: str, diagnostics: Diagnostics) -> list[str]:
    """The FID classifier's accuracy check and the FID floor of ``dataset``, as sentences."""
    items = []
    for e in diagnostics.classifier:
        if e["dataset"] != dataset:
            continue
        if e.get("unavailable"):
            items.append(f"FID classifier: unavailable: {e['unavailable']}.")
        elif e["ok"] is False:
            items.append(f"FID classifier: test accuracy {_num(e['test_accuracy'], '.4f')} < {e['threshold']:g}: "
                         "its features separate the classes poorly, so FID is a coarse distance here.")
        elif e["ok"]:
            items.append(f"FID classifier: test accuracy {_num(e['test_accuracy'], '.4f')} >= {e['threshold']:g}.")
        else:
            items.append("FID classifier: no test accuracy recorded.")
    for e in diagnostics.fid_floor:
        if e["dataset"] == dataset and e.get("unavailable"):
            items.append(f"FID floor: unavailable: {e['unavailable']}.")
        elif e["dataset"] == dataset:
            items.append(f"FID floor: {_num(e['floor'], '.2f')}, the FID of {plain(e['floor_n'])} held-out real "
                         f"images against the test statistics; model FIDs (N = {plain(e['fid_n'])}) cannot be "
                         "expected below it.")
    return items


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
            "images (valid_density = false; see the protocol); they are shown for completeness, treated as "
            "optimistic and left out of every likelihood comparison.")


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
    """Ours (mean ± 95% CI over seeds) next to the published numbers of :mod:`vaebench.report.published` for
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
            f"ours ({CI_TEXT})": format_ci(stat, spec, metric["sign"]),
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
        return (f"single-sample ELBO on {u('n_images')} fixed random test images; {u('data_treatment')}; "
                f"{u('epochs')} epoch(s)")
    if metric == "nll_nats":
        return (f"-L_k with k = {u('iwae_k')} on {u('n_images')} fixed random test images; likelihood of "
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
        return "null (the whole test split)" if key == "n_images" else "null"
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
    """The protocol as sentences: seeds and intervals, training, the test images, ELBO, -L_k and its
    diagnostic, per-likelihood conventions, latent analysis, FID, paired comparisons, flags, grids, data.

    Settings come from the cells' configuration records (``cell.*`` columns) and the metrics fields; where
    a model's setting differs from the others', the sentence gives the others' value ("per-model
    differences below", see :func:`setting_differences`).
    """
    common, differing = common_settings(frame, models)
    c = lambda k: common.get(k, "n/a")  # noqa: E731
    u = lambda col, df=frame: unique(df, col)  # noqa: E731
    more = " (per-model differences below)" if differing else ""
    items = [
        f"Seeds: {', '.join(map(str, seeds))}. Every table gives the mean over training "
        f"seeds ± the half-width of its {LEVEL:.0%} interval, t_(S-1, 0.975) std / sqrt(S) with the sample std "
        "(ddof = 1) (Student t; Bouthillier et al. 2021 for seeds as a source of variance); with a single seed "
        "there is no interval (reports/metrics.json also holds std and se). The interval is very wide with 2 seeds (t_(1, 0.975) = 12.7).",
        f"Training: {c('train.epochs')} epoch(s), batch size {c('train.batch_size')}, learning rate "
        f"{c('train.lr')}{more}; epochs run per cell: {u('epochs')}; device: {u('device')}.",
        f"Test images: every per-image estimate (ELBO and its terms, L_k and its diagnostic, the discretised "
        f"column, the latent analysis) is on the same {u('n_images')} test images (evaluate.n_images = "
        f"{c('evaluate.n_images')}), a fixed random subset drawn with evaluate.seed = {c('evaluate.seed')}, "
        "identical for every model and seed, so that models are compared image by image (per-image values in "
        "each cell's per_image.npz).",
        "ELBO: single-sample estimate, one z ~ q(z|x) per image, with the closed-form KL (Kingma & Welling 2014, "
        "eq. 7); the reconstruction NLL and KL columns are its two terms.",
        f"Test NLL: -L_k, the importance-weighted bound of Burda et al. (2016, eq. 8) with k = {u('iwae_k')} "
        f"samples per image (evaluate.iwae_k = {c('evaluate.iwae_k')}), computed with each model's own posterior "
        "density; an upper bound on -log p(x) that tightens as k grows. Diagnostic: L_k - L_{k/10}, with "
        "L_{k/10} the mean bound of 10 disjoint blocks of the same k samples; a gap above "
        f"evaluate.lk_tolerance_nats = {c('evaluate.lk_tolerance_nats')} nats/image flags -L_k as not converged.",
        f"Test data: mapped once into each model's data space (binarised or dequantised, see below) with seed "
        f"evaluate.seed = {c('evaluate.seed')}, so every model of a data space is scored on the same test data; "
        "the same seed draws the posterior and prior samples. Results tables are split by data space: a "
        "likelihood of binarised images and a density of dequantised 8-bit images are different quantities "
        "and never share a column.",
    ]
    items += likelihood_items(frame)
    if "test_nll_iwae_discretised_nats" in frame.columns and frame["test_nll_iwae_discretised_nats"].notna().any():
        items.append(DISCRETISED_NOTE)
    items.append(
        f"Latent analysis on the first {u('latent_n')} of the test images (evaluate.latent_n = "
        f"{c('evaluate.latent_n')}): rate = mean KL(q(z|x)||p(z)) = mutual information I(x; z) + marginal "
        "KL(q(z)||p(z)) of the aggregate posterior q(z) (Hoffman & Johnson 2016); I(x; z) <= log N for N images "
        "(a value above it is estimation noise); active units: latent dimensions whose posterior mean varies "
        "over the images with variance > 0.01 (Burda et al. 2016, Section 5.2).")
    items += fid_items(frame, datasets, c('evaluate.fid_n'), c('evaluate.fid_seeds'))
    items.append(
        "Paired comparisons: every pair of models that differ in exactly one component (architecture, "
        "latent_dim, posterior, likelihood or objective, name or settings) is compared over the seeds both "
        "have (paired by seed) and, per image, over the same test images: diff = mean over seeds of the "
        "per-image mean of A - B, with its standard errors over seeds (std of the per-seed differences / "
        "sqrt(S), which covers image sampling and training randomness) and over images (the image-sampling part "
        f"alone); the {LEVEL:.0%} CI is Student t over seeds (normal over images with a single seed), and the verdict "
        "names a better model only when the interval excludes 0, else 'inconclusive' (Dror et al. 2018). NLL "
        "and ELBO are compared only within one data space and between normalised densities; FID for every pair "
        "(per seed).")
    items.append("Flags: " + " ".join(f"{name.replace('_', ' ')}: {rule}" for name, rule in RULES.items()))
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


def fid_items(frame: pd.DataFrame, datasets: list[str], fid_n_setting: str = "n/a",
              fid_seeds_setting: str = "n/a") -> list[str]:
    """Per dataset: the FID protocol and its classifier (accuracies, epochs, feature dimension) as recorded
    in the metrics files; for a dataset without a classifier, why its classifier-feature FID is unavailable."""
    items = []
    for d in datasets:
        sub = _rows(frame, d)
        unavailable = _unavailable(sub)
        if unavailable:
            items.append(f"FID ({d}): classifier-feature FID {unavailable}. No number is reported in its place; "
                         "the likelihoods, latent analysis and sample grids are unaffected, and the Inception FID "
                         "(needs no labels) is given where its weights are present.")
            continue
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
            f"training split ({', '.join(bits)}), between N = {unique(sub, 'fid_n')} prior samples "
            f"(evaluate.fid_n = {fid_n_setting}) and the statistics of the whole test split: "
            f"{unique(sub, 'fid_reference')}. The samples are decoder means of z ~ p(z), quantised to 8 bits, for "
            f"{unique(sub, 'fid_seeds')} sample seeds (evaluate.fid_seeds = {fid_seeds_setting}): a cell's FID is "
            "their mean and their std is the spread over sample seeds; the 'draws' column scores x ~ p(x|z) "
            "instead of the decoder mean (n/a where the decoder cannot be sampled without the data). The floor "
            f"is the FID of {unique(sub, 'fid_floor_n')} held-out real images (validation split) against the same "
            "statistics. FID values are only comparable at equal N with the same extractor, and are NOT "
            "comparable with the Inception-v3 FIDs of papers.")
    return items


def data_items(frame: pd.DataFrame, datasets: list[str]) -> list[str]:
    """Per dataset: the split (validation size) and subset caps, from the cells' ``cell.data`` records."""
    items = []
    for d in datasets:
        sub = _rows(frame, d)
        if "cell.data.split_seed" in sub.columns and sub["cell.data.split_seed"].notna().any():
            # no official split (Frey Face): a seeded random split, stored in the prepared file
            text = (f"Data ({d}): no official split; a random split with numpy RandomState("
                    f"{unique(sub, 'cell.data.split_seed')}): test = {unique(sub, 'cell.data.n_test')} images, "
                    f"validation = {unique(sub, 'cell.data.n_validation')}, training = the rest (the indices are "
                    "stored in the prepared file).")
        else:
            text = (f"Data ({d}): test = the official test split; validation = the last "
                    f"{unique(sub, 'cell.data.n_validation')} images of the training split, training = the rest.")
        caps = {k: unique(sub, f"cell.data.{k}") for k in ("max_train", "max_validation", "max_test")}
        caps = {k: v for k, v in caps.items() if v != "n/a"}
        if caps:
            text += " Subset sizes: " + ", ".join(f"{k} = {v}" for k, v in caps.items()) + "."
        items.append(text)
    return items


SETTINGS_COLUMNS = ["dataset", "model", "data_treatment", "likelihood_of", "valid_density", "n_images", "iwae_k",
                    "lk_tolerance_nats", "latent_n", "fid_n", "fid_seeds", "fid_reference", "epochs", "device"]


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
        f"({n_cells} cells). Values are the mean over training seeds ± the half-width of its {LEVEL:.0%} "
        "Student-t interval; with a single seed only the value is shown (std and interval are null in "
        "metrics.json). Likelihood-type numbers are nats per image (summed over all pixels "
        "of an image), in separate tables per data space; bits/dim are bits per dimension. Models that differ in "
        "one component are compared image by image and seed by seed (Paired comparisons), and the Flags say "
        "where a number should not be trusted. Per-cell values: summary.csv; aggregates, comparisons and flags: "
        "metrics.json. The protocol is stated at the end.")


# ------------------------------------------------------------------------------------------------
# Claims (the verdict table that opens the report)

def _claim_pair(r: dict) -> str:
    return f"{r['model_a']} vs {r['model_b']}" if r.get("model_a") else "n/a"


def verdict_table(rows: list[dict]) -> pd.DataFrame:
    """One row per checked claim x dataset x pair x metric (the rows of
    :func:`vaebench.report.claims.check_claims`): the claim, dataset, pair, metric (with its unit), what the
    paper claims, our paired difference A - B ± the half-width of its 95% interval with the interval itself,
    seeds, the published A and B where the paper gives both, and the verdict (with the reason when not
    tested, and the models whose L_k is flagged as not converged)."""
    from vaebench.report.claims import metric_label

    out = []
    for r in rows:
        if r["diff"] is None:
            ours = "n/a"
        elif r["ci_low"] is None:
            ours = f"{_num(r['diff'], '.4g')} (no interval)"
        else:
            ours = f"{_num(r['diff'], '.4g')} [{_num(r['ci_low'], '.4g')}, {_num(r['ci_high'], '.4g')}]"
        pub = "n/a"
        if r.get("published_a") is not None:
            pub = (f"{_num(r['published_a'], '.4g')} vs {_num(r['published_b'], '.4g')} "
                   f"(A - B = {_num(r['published_diff'], '.4g')}; {r['published_source']})")
        verdict = r["verdict"]
        if r.get("reason"):
            verdict += f" ({r['reason']})"
        if r.get("lk_not_converged"):
            verdict += f"; L_k not converged: {r['lk_not_converged'].replace(';', ', ')}"
        out.append({"claim": r["claim"], "dataset": r["dataset"], "A vs B": _claim_pair(r),
                    "metric": metric_label(r["metric"]), "claimed": r["expected"],
                    f"ours: A - B [{LEVEL:.0%} CI]": ours, "seeds": "n/a" if not r.get("n_seeds") else str(int(r["n_seeds"])),
                    "published A vs B": pub, "verdict": verdict})
    return pd.DataFrame(out)


def verdict_counts(rows: list[dict]) -> str:
    """'N checks: a reproduced, b not reproduced, c inconclusive, d not tested'."""
    from vaebench.report.claims import VERDICTS

    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return f"{len(rows)} checks: " + ", ".join(f"{n} {v}" for v, n in counts.items())
