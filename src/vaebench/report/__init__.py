"""Report stage: gather every cell of a study into tables, figures and a self-contained report.

Inputs (one set per cell = dataset x model x seed, at the :func:`vaebench.paths.cell_paths` locations): the
evaluation metrics JSON, the per-image estimates (npz), the training log CSV and the sample / reconstruction
grids (PNG). Outputs (all written atomically, under ``out_dir`` at the same relative places as under
:data:`vaebench.paths.REPORT_DIR`):

* ``summary.csv``   one row per cell (every metrics field as stored, nested dicts flattened, nothing averaged);
* ``metrics.json``  strict JSON (no NaN), keys sorted, a DVC metrics file::

      {"models": {dataset: {model: {metric: {"mean", "std", "se", "ci_low", "ci_high", "n_seeds"
                                             [, "n_excluded"]}}}},
       "comparisons": [one row per pair x metric, :func:`vaebench.report.paired.paired_comparisons`],
       "flags": {"rules", "lk_not_converged", "geco_not_settled", "classifier_accuracy_low", "fid_floor"}}

  ``models``: every numeric result over training seeds (sample std ddof = 1, se = std / sqrt(S), 95%
  Student-t interval; null with a single seed); ``comparisons``: paired differences A - B of the models that
  differ in one component, with standard errors over images and seeds, interval and verdict; ``flags``: the
  diagnostics of :mod:`vaebench.report.flags` that fired, with their rules;
* ``claims.csv``    the seed papers' claims (``claims.yaml``) checked on every dataset, with verdicts
  (:mod:`vaebench.report.claims`); kept in git, the README's verdict table is generated from it;
* ``figures/``      rate-distortion, FID against NLL, every model's samples and reconstructions side by side,
  training curves per model, latent use, validation curves, copies of the image grids;
* ``plots/``        the training curves as long-format CSVs for ``dvc plots show`` (:mod:`vaebench.report.dvc_plots`);
* ``index.html``    the report with every image embedded as a base64 data URI (opens offline);
* ``index.md``      the same report in Markdown, referencing ``figures/...``.

Modules: :mod:`~vaebench.report.collect` (reading and checking the inputs, summary and aggregates),
:mod:`~vaebench.report.paired` (paired comparisons), :mod:`~vaebench.report.flags` (diagnostics),
:mod:`~vaebench.report.tables` (tables and protocol text), :mod:`~vaebench.report.figures` (matplotlib),
:mod:`~vaebench.report.render` (the document and its Jinja2 templates), :mod:`~vaebench.report.published`
(published reference numbers). Importing this package imports none of them (pandas, matplotlib and Jinja2
load when :func:`build_report` runs).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vaebench import paths

if TYPE_CHECKING:
    from vaebench.config import Study

__all__ = ["build_report", "output_paths"]


def output_paths(out_dir: str | Path = paths.REPORT_DIR) -> dict[str, Path]:
    """The report's files under ``out_dir``, at the same relative places as under ``paths.REPORT_DIR``.

    Keys: ``dir``, ``summary_csv``, ``metrics_json``, ``index_html``, ``index_md``, ``claims_csv``, ``figures`` and
    ``plots`` (folders).
    """
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
        "claims_csv": rel(paths.REPORT_CLAIMS),
        "plots": rel(paths.REPORT_PLOTS),
    }


def build_report(study: "Study", out_dir: str | Path = paths.REPORT_DIR, claims_path: str | Path = paths.CLAIMS) -> dict:
    """Read every cell of ``study`` and write the report files under ``out_dir``.

    ``study`` needs ``name``, ``dataset_names``, ``model_names``, ``seeds`` and ``cells()`` (a
    :class:`vaebench.config.Study`). Input paths are relative to the working directory (the repository root).

    Returns:
        ``{"n_cells", "datasets", "models", "seeds", "summary_csv", "metrics_json", "index_html", "index_md",
        "figures"}``: counts, the grid and the paths written (``figures``: every figure file, sorted).
    Raises:
        FileNotFoundError: an input of some cell is missing (the message names the file); raised before
            anything is written, so the previous report (or none) stays in place.
        ValueError: a metrics or per-image file is invalid or describes another cell, or two models compared
            image by image were evaluated on different test images (also before writing anything).
    """
    from vaebench.atomic import atomic_path, write_json, write_text
    from vaebench.report import claims as claims_mod
    from vaebench.report import collect, dvc_plots, figures, flags, paired, render

    datasets, models, seeds = list(study.dataset_names), list(study.model_names), list(study.seeds)
    cells = [(str(d), str(m), int(s)) for d, m, s in study.cells()]
    claims = claims_mod.load_claims(claims_path)

    inputs = collect.read_cells(cells)            # every input checked and read before any output
    records = [c.record for c in inputs]
    logs = {c.cell: c.log for c in inputs}
    summary = collect.summary_frame(records)
    frame = collect.summary_frame(records, include_cell=True)
    aggregate = collect.aggregate_over_seeds(records)
    diagnostics = flags.diagnose(inputs, datasets, models)
    comparisons = paired.paired_comparisons(inputs, datasets, models, diagnostics)
    metrics = {"models": aggregate, "comparisons": comparisons, "flags": flags.flags_json(diagnostics)}
    verdicts = claims_mod.check_claims(claims, inputs, datasets, models, diagnostics)

    out = output_paths(out_dir)
    figs = figures.write_figures(out["figures"], datasets, models, seeds, records, logs)
    plot_files = dvc_plots.write_plot_data(out["plots"], datasets, models, seeds, logs)
    doc = render.build_document(f"vaebench report: study {study.name}", datasets, models, seeds, frame,
                                aggregate, figs, comparisons, diagnostics, verdicts)
    html, markdown = render.render_html(doc), render.render_markdown(doc, out["dir"])

    write_json(out["metrics_json"], metrics)
    claims_mod.write_claims_csv(verdicts, out["claims_csv"])
    write_text(out["index_md"], markdown)
    write_text(out["index_html"], html)
    with atomic_path(out["summary_csv"]) as tmp:
        summary.to_csv(tmp, index=False)

    return {
        "n_cells": len(cells),
        "datasets": datasets,
        "models": models,
        "seeds": seeds,
        "summary_csv": str(out["summary_csv"]),
        "metrics_json": str(out["metrics_json"]),
        "claims_csv": str(out["claims_csv"]),
        "index_html": str(out["index_html"]),
        "index_md": str(out["index_md"]),
        "figures": sorted(str(p) for f in figs.values() for p in f.files()),
        "plots": sorted(str(p) for p in plot_files),
    }
