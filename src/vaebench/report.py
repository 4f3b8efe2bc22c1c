"""Report stage: gather every cell of the grid into tables, figures and a self-contained report.

Inputs (one set per cell = dataset x model x seed, at the ``paths`` templates): the evaluation
metrics JSON, the training log CSV and the sample / reconstruction grids (PNG); per dataset,
optionally, the FID classifier's metrics JSON. Outputs (all written atomically, under ``out_dir``):

* ``summary.csv``   one row per cell (every metric as stored, nothing averaged);
* ``metrics.json``  mean and sample standard deviation (ddof = 1) over seeds per dataset x model for
  every numeric metric; ``std`` is ``null`` when only one seed has a value (a spread cannot be
  estimated from one run, and 0 would claim it was);
* ``figures/``      validation curves, log sigma / GECO lambda per epoch, copies of the image grids;
* ``index.html``    the report with every image embedded as a base64 data URI (opens offline);
* ``index.md``      the same report in Markdown, referencing ``figures/...``.

Conventions of the metrics (fixed by the evaluate stage): every likelihood-type number is in nats
per image (summed over the D = C*H*W dimensions of one image, averaged over the test images used);
``test_elbo_nats`` is the ELBO itself (a lower bound on log p, higher is better), ``test_recon_nats``
the expected reconstruction negative log-likelihood, ``test_kl_nats`` KL(q(z|x)||p(z)),
``test_nll_iwae_nats`` = -L_k (an upper bound on -log p); ``bits_per_dim`` is in bits per
dimension; ``fid_classifier`` is a Frechet distance in the features of the project's own classifier.

Every input of every cell is checked before anything is written, so a missing file raises
``FileNotFoundError`` naming it and leaves the previous report (or none) in place.
"""
from __future__ import annotations

import base64
import html
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vaebench import paths, published
from vaebench.io import atomic_path, write_json, write_text

ID_COLUMNS = ["dataset", "model", "seed"]
# Column order of summary.csv; any further metric keys follow, sorted by name.
SUMMARY_COLUMNS = ID_COLUMNS + [
    "test_elbo_nats", "test_recon_nats", "test_kl_nats", "test_nll_iwae_nats", "iwae_k",
    "bits_per_dim", "fid_classifier", "train_seconds",
    "effective_beta", "log_sigma", "lambda", "posterior", "likelihood", "objective", "likelihood_of",
]
# Numeric fields that describe how a cell was run rather than how well it did: not averaged.
SETTING_KEYS = {
    "seed", "latent_dim", "beta", "iwae_k", "elbo_n_images", "iwae_n_images", "fid_n", "epochs",
}

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
TRACE_COLUMNS = ["log_sigma", "lambda"]


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def build_report(params: dict, out_dir: str | Path = paths.REPORT_DIR) -> dict:
    """Read every cell of ``params['grid']`` and write the report files under ``out_dir``.

    Returns a small summary: number of cells, datasets/models/seeds and the paths written.
    Raises ``FileNotFoundError`` (naming the file) before writing anything if an input is missing.
    """
    grid = params["grid"]
    datasets, models, seeds = list(grid["datasets"]), list(grid["models"]), list(grid["seeds"])
    cells = [(d, m, s) for d in datasets for m in models for s in seeds]

    records, logs = read_cells(cells)  # all inputs checked before any output is touched
    classifiers = {d: _read_classifier(d) for d in datasets}

    out = _output_paths(out_dir)
    summary = summary_frame(records)
    aggregate = aggregate_over_seeds(records)

    figures = _write_figures(out, datasets, models, seeds, logs, summary)
    doc = _document(params, datasets, models, seeds, summary, aggregate, classifiers, figures, out)

    write_json(out["metrics_json"], aggregate)
    write_text(out["index_md"], render_markdown(doc, out["dir"]))
    write_text(out["index_html"], render_html(doc, title=_title(params)))
    with atomic_path(out["summary_csv"]) as tmp:
        summary.to_csv(tmp, index=False)

    return {
        "n_cells": len(cells),
        "datasets": datasets,
        "models": models,
        "seeds": seeds,
        "summary_csv": str(out["summary_csv"]),
        "metrics_json": str(out["metrics_json"]),
        "index_html": str(out["index_html"]),
        "index_md": str(out["index_md"]),
        "figures": sorted(str(p) for p in _all_figure_paths(figures)),
    }


def _output_paths(out_dir: str | Path) -> dict[str, Path]:
    """The report's files under ``out_dir``, at the same relative places as in ``paths``."""
    out_dir = Path(out_dir)

    def rel(p: str) -> Path:
        return out_dir / Path(p).relative_to(paths.REPORT_DIR)

    return {
        "dir": out_dir,
        "summary_csv": rel(paths.SUMMARY_CSV),
        "metrics_json": rel(paths.REPORT_METRICS),
        "index_html": rel(paths.REPORT_HTML),
        "index_md": rel(paths.REPORT_MD),
        "figures": rel(paths.REPORT_FIGURES),
    }


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def read_cells(cells: list[tuple[str, str, int]]) -> tuple[list[dict], dict[tuple, pd.DataFrame]]:
    """Metrics records and training logs of ``cells``; every input file must exist.

    A metrics file whose dataset/model/seed disagree with its cell raises ``ValueError``.
    """
    for cell in cells:
        files = paths.cell_paths(*cell)
        for role in ("metrics", "train_log", "samples_png", "recon_png"):
            if not files[role].is_file():
                raise FileNotFoundError(f"report input missing for cell {cell}: {files[role]}")
    records, logs = [], {}
    for dataset, model, seed in cells:
        files = paths.cell_paths(dataset, model, seed)
        rec = json.loads(files["metrics"].read_text(encoding="utf-8"))
        found = (str(rec.get("dataset")), str(rec.get("model")), rec.get("seed"))
        if found[:2] != (dataset, model) or int(found[2]) != int(seed):
            raise ValueError(f"{files['metrics']} describes cell {found}, expected {(dataset, model, seed)}")
        records.append(rec)
        logs[(dataset, model, seed)] = pd.read_csv(files["train_log"])
    return records, logs


def _read_classifier(dataset: str) -> dict:
    """The FID classifier's metrics for ``dataset`` (empty when the file does not exist)."""
    p = Path(paths.CLASSIFIER_METRICS.format(dataset=dataset))
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def summary_frame(records: list[dict]) -> pd.DataFrame:
    """One row per cell: the columns of ``SUMMARY_COLUMNS`` first, then every other key, sorted."""
    extra = sorted({k for r in records for k in r} - set(SUMMARY_COLUMNS))
    columns = SUMMARY_COLUMNS + extra
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=columns)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def numeric_metric_keys(records: list[dict]) -> list[str]:
    """Keys whose non-null values are all numbers (at least one), minus ids and ``SETTING_KEYS``."""
    keys = []
    for k in sorted({k for r in records for k in r} - set(ID_COLUMNS) - SETTING_KEYS):
        values = [r.get(k) for r in records if r.get(k) is not None]
        if values and all(_is_number(v) for v in values):
            keys.append(k)
    return keys


def aggregate_over_seeds(records: list[dict]) -> dict:
    """{dataset: {model: {metric: {mean, std, n_seeds}}}} over the seeds of each dataset x model.

    ``std`` is the sample standard deviation (ddof = 1) and ``null`` with a single seed; seeds
    whose value is null or non-finite are left out (``n_seeds`` counts the ones used, and
    ``n_excluded`` appears when a value was non-finite). Metrics without any value are omitted.
    """
    keys = numeric_metric_keys(records)
    out: dict = {}
    for rec in records:
        out.setdefault(str(rec["dataset"]), {}).setdefault(str(rec["model"]), [])
    for dataset, by_model in out.items():
        for model in list(by_model):
            cell_records = [r for r in records if r["dataset"] == dataset and r["model"] == model]
            stats = {}
            for k in keys:
                values = [float(r[k]) for r in cell_records if r.get(k) is not None]
                finite = [v for v in values if math.isfinite(v)]
                if not values:
                    continue
                entry = {
                    "mean": float(np.mean(finite)) if finite else None,
                    "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                    "n_seeds": len(finite),
                }
                if len(finite) < len(values):
                    entry["n_excluded"] = len(values) - len(finite)
                stats[k] = entry
            by_model[model] = stats
    return out


def _num(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def format_mean_std(stat: dict | None, spec: str, sign: float = 1.0) -> str:
    """'mean ± std' (std left out when it is null, i.e. with one seed); 'n/a' without a value."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = _num(sign * stat["mean"], spec)
    if stat.get("std") is not None:
        text += " ± " + _num(stat["std"], spec)
    return text


def results_table(dataset: str, models: list[str], aggregate: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per model; columns without any value in this dataset are dropped."""
    agg = aggregate.get(dataset, {})
    ks = sorted({int(k) for k in summary.loc[summary["dataset"] == dataset, "iwae_k"].dropna()})
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


def models_table(dataset: str, models: list[str], summary: pd.DataFrame) -> pd.DataFrame:
    """What each model is: architecture, posterior, likelihood, objective, data treatment."""
    cols = ["architecture", "latent_dim", "posterior", "likelihood", "objective", "beta",
            "data_treatment", "likelihood_of"]
    rows = []
    for m in models:
        sub = summary[(summary["dataset"] == dataset) & (summary["model"] == m)]
        rows.append({"model": m, **{c: _unique(sub, c) for c in cols}})
    return pd.DataFrame(rows)


def _unique(df: pd.DataFrame, col: str) -> str:
    """The distinct non-null values of ``col`` joined with ' / ' ('n/a' when there are none)."""
    if col not in df.columns:
        return "n/a"
    values = []
    for v in df[col].tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        s = _plain(v)
        if s not in values:
            values.append(s)
    return " / ".join(values) if values else "n/a"


def _plain(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _train_k(params: dict, model: str) -> int:
    """Importance samples per image in the training objective (1 for a plain ELBO)."""
    objective = params.get("models", {}).get(model, {}).get("objective", {}) or {}
    k = objective.get("k")
    return int(k) if k else 1


def comparison_table(params: dict, dataset: str, models: list[str], aggregate: dict,
                     summary: pd.DataFrame) -> pd.DataFrame:
    """Ours next to the published numbers (``published.PUBLISHED``) for models in the study."""
    train_k = {m: _train_k(params, m) for m in models}
    rows = []
    for e in published.entries_for(dataset, models, train_k):
        metric = published.METRICS[e["metric"]]
        stat = aggregate.get(dataset, {}).get(e["model"], {}).get(metric["ours"])
        spec = ".3g" if e["metric"] == "effective_beta" else ".2f"
        rows.append({
            "model": e["model"],
            "metric": metric["label"],
            "ours (mean ± std)": format_mean_std(stat, spec, metric["sign"]),
            "published": (e["bound"] or "") + _plain(e["value"]),
            "published setting": e["setting"],
            "source": e["source"],
            "our protocol": _our_protocol(e["metric"], summary, dataset, e["model"]),
            "protocol differences": e["protocol"],
        })
    return pd.DataFrame(rows)


def _our_protocol(metric: str, summary: pd.DataFrame, dataset: str, model: str) -> str:
    sub = summary[(summary["dataset"] == dataset) & (summary["model"] == model)]
    u = lambda c: _unique(sub, c)  # noqa: E731
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


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _mean_over_seeds(frames: list[pd.DataFrame], column: str) -> pd.Series | None:
    """Per-epoch mean of ``column`` over the seeds that logged it (None when none did)."""
    parts = [f[["epoch", column]] for f in frames if column in f.columns and f[column].notna().any()]
    if not parts:
        return None
    joined = pd.concat(parts, ignore_index=True)
    return joined.groupby("epoch")[column].mean().sort_index()


def _epoch_axis(ax) -> None:
    """Whole-number epoch ticks, and plain (offset-free) y tick labels on linear axes."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 3:  # a few epochs only: MaxNLocator would still place fractional ticks
        ax.set_xticks(range(math.ceil(lo), math.floor(hi) + 1))
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)


def plot_validation_curves(dataset: str, groups: dict[str, list[str]], seeds: list, logs: dict,
                           path: Path) -> Path:
    """Validation -ELBO and validation training loss (nats/image) per epoch, mean over seeds.

    ``groups`` maps a likelihood family to its models: one row of panels per family, because
    continuous (Gaussian) and discrete (Bernoulli, categorical) likelihoods live on different
    scales and would flatten each other on a shared axis.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.8 * len(groups)), squeeze=False)
    for row, (family, models) in zip(axes, groups.items()):
        for m in models:
            frames = [logs[(dataset, m, s)] for s in seeds]
            elbo = _mean_over_seeds(frames, "val_elbo")
            loss = _mean_over_seeds(frames, "val_loss")
            if elbo is not None:
                row[0].plot(elbo.index, -elbo.values, marker=".", label=m)
            if loss is not None:
                row[1].plot(loss.index, loss.values, marker=".", label=m)
        row[0].set_title(f"{dataset}, {family} decoders: validation -ELBO")
        row[0].set_ylabel("-ELBO (nats/image)")
        row[1].set_title(f"{dataset}, {family} decoders: validation training loss")
        row[1].set_ylabel("model's own objective (nats/image)")
        for ax in row:
            ax.set_xlabel(f"epoch (mean over {len(seeds)} seed(s))")
            _epoch_axis(ax)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_traces(dataset: str, models: list[str], seeds: list, logs: dict, path: Path) -> Path | None:
    """log sigma and GECO lambda per epoch (mean over seeds) for the models that log them."""
    series = {}
    for col in TRACE_COLUMNS:
        for m in models:
            s = _mean_over_seeds([logs[(dataset, m, sd)] for sd in seeds], col)
            if s is not None:
                series.setdefault(col, {})[m] = s
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4), squeeze=False)
    labels = {"log_sigma": "log sigma (decoder)", "lambda": "GECO lambda"}
    for ax, (col, by_model) in zip(axes[0], series.items()):
        for m, s in by_model.items():
            ax.plot(s.index, s.values, marker=".", label=m)
        if col == "lambda" and all((s > 0).all() for s in by_model.values()):
            ax.set_yscale("log")
        ax.set_title(f"{dataset}: {labels[col]} per epoch")
        ax.set_xlabel(f"epoch (mean over {len(seeds)} seed(s))")
        _epoch_axis(ax)
        ax.set_ylabel(labels[col])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _copy(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _likelihood_groups(summary: pd.DataFrame, dataset: str, models: list[str]) -> dict[str, list[str]]:
    """{likelihood family ('gaussian', 'bernoulli', ...): models of ``dataset``}, in grid order."""
    groups: dict[str, list[str]] = {}
    for m in models:
        lik = _unique(summary[(summary["dataset"] == dataset) & (summary["model"] == m)], "likelihood")
        groups.setdefault(lik.split("/")[0], []).append(m)
    return groups


def _write_figures(out: dict, datasets, models, seeds, logs, summary) -> dict:
    """{dataset: {'curves': path, 'traces': path|None, 'grids': {(model, seed): (samples, recon)}}}."""
    fig_dir = out["figures"]
    figures: dict = {}
    for d in datasets:
        groups = _likelihood_groups(summary, d, models)
        grids = {}
        for m in models:
            for s in seeds:
                cell = paths.cell_paths(d, m, s)
                grids[(m, s)] = (
                    _copy(cell["samples_png"], fig_dir / f"{d}_{m}_seed{s}_samples.png"),
                    _copy(cell["recon_png"], fig_dir / f"{d}_{m}_seed{s}_recon.png"),
                )
        figures[d] = {
            "curves": plot_validation_curves(d, groups, seeds, logs, fig_dir / f"{d}_validation_curves.png"),
            "traces": plot_traces(d, models, seeds, logs, fig_dir / f"{d}_log_sigma_lambda.png"),
            "grids": grids,
        }
    return figures


def _all_figure_paths(figures: dict) -> list[Path]:
    out = []
    for f in figures.values():
        out += [p for p in (f["curves"], f["traces"]) if p is not None]
        for pair in f["grids"].values():
            out += list(pair)
    return out


# --------------------------------------------------------------------------------------------
# Document: one list of blocks rendered twice (Markdown and HTML)
# --------------------------------------------------------------------------------------------

@dataclass
class Img:
    """An image of the report: ``path`` on disk, shown with ``alt`` text."""

    path: Path
    alt: str


def _title(params: dict) -> str:
    return f"vaebench report: study {params.get('study', '?')}"


def _document(params, datasets, models, seeds, summary, aggregate, classifiers, figures, out) -> list:
    doc: list = [("h", 1, _title(params))]
    doc.append(("p", (
        f"Grid: datasets {', '.join(datasets)}; models {', '.join(models)}; seeds "
        f"{', '.join(map(str, seeds))} ({len(summary)} cells). Values are mean ± sample standard "
        "deviation (ddof = 1) over seeds; with a single seed only the value is shown (std is null "
        "in metrics.json). Likelihood-type numbers are nats per image (summed over all pixels of "
        "an image); bits/dim are bits per dimension. Per-cell values: summary.csv; aggregates: "
        "metrics.json. The protocol is stated at the end.")))
    for d in datasets:
        doc.append(("h", 2, f"Dataset: {d}"))
        doc.append(("h", 3, "Models"))
        doc.append(("table", models_table(d, models, summary)))
        doc.append(("h", 3, "Results (test set)"))
        doc.append(("table", results_table(d, models, aggregate, summary)))
        doc += _comparison_blocks(params, d, models, aggregate, summary)
        doc.append(("h", 3, "Training curves"))
        doc.append(("img", Img(figures[d]["curves"], f"{d} validation curves")))
        doc.append(("h", 3, "Decoder log sigma / GECO lambda"))
        if figures[d]["traces"] is not None:
            doc.append(("img", Img(figures[d]["traces"], f"{d} log sigma and lambda per epoch")))
        else:
            doc.append(("p", "No model of this dataset logs log_sigma or lambda."))
        doc.append(("h", 3, f"Samples and reconstructions (seed {seeds[0]})"))
        doc.append(("p", "Samples: decoder means of z ~ p(z). Reconstructions: rows of test images, "
                         "each followed by a row of their reconstructions. Grids of the other seeds "
                         "are in figures/."))
        rows = []
        for m in models:
            samples, recon = figures[d]["grids"][(m, seeds[0])]
            rows.append({"model": m, "samples": Img(samples, f"{d} {m} samples"),
                         "reconstructions": Img(recon, f"{d} {m} reconstructions")})
        doc.append(("table", pd.DataFrame(rows)))
    doc += _protocol_blocks(params, datasets, models, seeds, summary, classifiers)
    return doc


def _comparison_blocks(params, dataset, models, aggregate, summary) -> list:
    table = comparison_table(params, dataset, models, aggregate, summary)
    blocks: list = [("h", 3, "Comparison with published numbers")]
    if table.empty:
        blocks.append(("p", "No published number in vaebench.published concerns a model of this "
                            "study on this dataset."))
        return blocks
    blocks.append(("p", (
        "Published values as printed ('<' = a negative ELBO, an upper bound on -log p). The "
        "protocols differ as stated in the last column: where they differ materially, check the "
        "ranking of models, not the absolute values.")))
    # Each protocol note is long and shared by many rows: print it once, refer to it by number.
    notes = list(dict.fromkeys(table["protocol differences"]))
    table["protocol differences"] = [f"note {notes.index(n) + 1}" for n in table["protocol differences"]]
    blocks.append(("table", table))
    blocks.append(("p", "Protocol differences:"))
    blocks.append(("ul", [f"note {i}: {n}" for i, n in enumerate(notes, 1)]))
    used = [k for k in published.SOURCES if any(str(s).startswith(k) for s in table["source"])]
    blocks.append(("p", "Sources:"))
    blocks.append(("ul", [f"{k}: {published.SOURCES[k]}" for k in used]))
    return blocks


def _protocol_blocks(params, datasets, models, seeds, summary, classifiers) -> list:
    """The protocol, generated from params and the metrics files (nothing here is assumed)."""
    ev = params.get("evaluate", {}) or {}
    tr = params.get("train", {}) or {}
    u = lambda c, df=summary: _unique(df, c)  # noqa: E731
    likelihoods = [str(x) for x in summary["likelihood"].dropna().unique()]

    items = [
        f"Seeds: {', '.join(map(str, seeds))}. Mean ± sample std (ddof = 1) over seeds; the std "
        "is null (not 0) with a single seed.",
        f"Training: {tr.get('epochs', 'n/a')} epoch(s), batch size {tr.get('batch_size', 'n/a')}, "
        f"learning rate {tr.get('lr', 'n/a')} (per-model overrides below); epochs run per cell: "
        f"{u('epochs')}; device: {u('device')}.",
        f"ELBO: single-sample estimate (one z ~ q(z|x) per image) averaged over the first "
        f"{u('elbo_n_images')} test images (evaluate.elbo_n = {_setting(ev, 'elbo_n')}); the "
        "reconstruction NLL and KL columns are the two terms of the same estimate.",
        f"Test NLL: -L_k, the importance-weighted bound of Burda et al. (2016) with k = "
        f"{u('iwae_k')} samples per image (evaluate.iwae_k = {ev.get('iwae_k', 'n/a')}) on "
        f"the first {u('iwae_n_images')} test images (evaluate.iwae_n = {_setting(ev, 'iwae_n')}); an "
        "upper bound on -log p(x) that tightens as k grows, computed with each model's own "
        "posterior density (posterior family per model in the Models table).",
    ]
    items += _likelihood_items(likelihoods, summary)
    items += _fid_items(params, datasets, summary, classifiers)
    items.append(f"Image grids: {ev.get('grid_n', 'n/a')} images per grid (evaluate.grid_n).")
    items += _data_items(params, datasets)

    blocks: list = [("h", 2, "Protocol"), ("ul", items)]
    overrides = {m: (params.get("models", {}).get(m, {}) or {}).get("train") for m in models}
    overrides = {m: o for m, o in overrides.items() if o}
    if overrides:
        blocks.append(("p", "Per-model training overrides: " + "; ".join(
            f"{m}: {json.dumps(o, sort_keys=True)}" for m, o in overrides.items())))
    cols = ["dataset", "model", "data_treatment", "likelihood_of", "elbo_n_images", "iwae_k",
            "iwae_n_images", "fid_n", "fid_reference", "epochs", "device"]
    rows = []
    for d in datasets:
        for m in models:
            sub = summary[(summary["dataset"] == d) & (summary["model"] == m)]
            rows.append({c: (d if c == "dataset" else m if c == "model" else u(c, sub)) for c in cols})
    blocks.append(("h", 3, "Evaluation settings per dataset and model (from the metrics files)"))
    blocks.append(("table", pd.DataFrame(rows, columns=cols)))
    return blocks


def _setting(cfg: dict, key: str) -> str:
    """A params value for the protocol text; null means 'all' for the evaluation sizes."""
    if key not in cfg:
        return "n/a"
    return "null (the whole test split)" if cfg[key] is None else str(cfg[key])


def _likelihood_items(likelihoods: list[str], summary: pd.DataFrame) -> list[str]:
    items = []
    for lik in likelihoods:
        sub = summary[summary["likelihood"] == lik]
        what = f"'{lik}' decoders ({', '.join(dict.fromkeys(sub['model'].astype(str)))}): data " \
               f"{_unique(sub, 'data_treatment')}; likelihood of {_unique(sub, 'likelihood_of')}; "
        if lik.startswith("gaussian"):
            what += ("bits/dim = (NLL + D ln 256) / (D ln 2), a bound on the 8-bit data via uniform "
                     "dequantisation (D = C*H*W).")
        elif lik.startswith("categorical"):
            what += "bits/dim = NLL / (D ln 2), a discrete likelihood of the 8-bit data."
        elif lik.startswith("bernoulli"):
            what += ("the NLL is a likelihood of the binarised images (dynamic binarisation in "
                     "training, the test set binarised once with a fixed seed), not of the grey "
                     "levels; bits/dim, where given, are per binary pixel.")
        else:
            what += "see the metrics files for the bits/dim convention."
        items.append(what)
        if "optimal" in lik:
            items.append(
                f"Optimal sigma ('{lik}'): at test time sigma^2 is the running average of the last "
                "training epoch's MSE (fixed, so the test ELBO/NLL are normalised densities)."
                + (" Per-image variant: each test image uses its own MSE as variance, which is NOT "
                   "a normalised density evaluation (the variance depends on the image itself); "
                   "treat its likelihoods as optimistic." if "image" in lik else ""))
    return items


def _fid_items(params: dict, datasets: list[str], summary: pd.DataFrame, classifiers: dict) -> list[str]:
    ev = params.get("evaluate", {}) or {}
    feature_dim = (params.get("classifier", {}) or {}).get("feature_dim")
    items = []
    for d in datasets:
        sub = summary[summary["dataset"] == d]
        clf = classifiers.get(d, {})
        acc = clf.get("test_accuracy")
        bits = [f"test accuracy {_acc(acc) if acc is not None else _unique(sub, 'classifier_test_accuracy')}"]
        if _finite(clf.get("val_accuracy")):
            bits.append(f"validation accuracy {_acc(clf['val_accuracy'])}")
        if clf.get("epochs") is not None:
            bits.append(f"{clf['epochs']} epoch(s)")
        dim = clf.get("feature_dim", feature_dim)
        if dim is not None:
            bits.append(f"feature dimension {dim}")
        items.append(
            f"FID ({d}): Frechet distance in the feature space of a small CNN classifier trained on "
            f"the {d} training split ({', '.join(bits)}), N = {_unique(sub, 'fid_n')} "
            f"(evaluate.fid_n = {ev.get('fid_n', 'n/a')}): {_unique(sub, 'fid_reference')}; samples "
            "are decoder means of z ~ p(z), quantised to 8 bits. FID values are only comparable at "
            "equal N with the same extractor, and are NOT comparable with the Inception-v3 FIDs "
            "of papers.")
    return items


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def _acc(v: Any) -> str:
    return format(float(v), ".4f") if _finite(v) else "n/a"


def _data_items(params: dict, datasets: list[str]) -> list[str]:
    items = []
    for d in datasets:
        cfg = (params.get("datasets", {}) or {}).get(d, {}) or {}
        text = f"Data ({d}): test = the official test split; validation = the last " \
               f"{cfg.get('n_validation', 'n/a')} images of the training split, training = the rest."
        caps = {k: cfg.get(k) for k in ("max_train", "max_validation", "max_test") if cfg.get(k)}
        if caps:
            text += " Subset sizes: " + ", ".join(f"{k} = {v}" for k, v in caps.items()) + "."
        items.append(text)
    return items


# --------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------

def _md_cell(v: Any, base: Path) -> str:
    if isinstance(v, Img):
        return f"![{v.alt}]({v.path.relative_to(base).as_posix()})"
    text = "n/a" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: list, base: Path) -> str:
    """Markdown twin of the report; images are linked relative to ``base`` (the report folder)."""
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "img":
            lines += [_md_cell(block[1], base), ""]
        elif kind == "table":
            df = block[1]
            lines.append("| " + " | ".join(_md_cell(c, base) for c in df.columns) + " |")
            lines.append("|" + "---|" * len(df.columns))
            for row in df.itertuples(index=False):
                lines.append("| " + " | ".join(_md_cell(v, base) for v in row) + " |")
            lines.append("")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_cell(v: Any) -> str:
    if isinstance(v, Img):
        return f'<img src="{_data_uri(v.path)}" alt="{html.escape(v.alt)}">'
    return html.escape("n/a" if v is None else str(v))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
td img { max-width: 320px; }
"""


def render_html(doc: list, title: str = "vaebench report") -> str:
    """Self-contained HTML: every image is embedded as a base64 data URI."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in doc:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "img":
            parts.append(f"<figure>{_html_cell(block[1])}</figure>")
        elif kind == "table":
            df = block[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            body = "".join("<tr>" + "".join(f"<td>{_html_cell(v)}</td>" for v in row) + "</tr>"
                           for row in df.itertuples(index=False))
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
