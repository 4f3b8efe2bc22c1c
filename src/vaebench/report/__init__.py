"""Report stage: every cell of a study gathered into summary.csv, metrics.json, claims.csv, figures, DVC plots
and index.html / index.md (layout and conventions: docs/report.md)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vaebench import paths

if TYPE_CHECKING:
    from vaebench.config import Study

__all__ = ["build_report", "output_paths"]


def output_paths(out_dir: str | Path) -> dict[str, Path]:
    """The report's files under ``out_dir``, at the same relative places as under ``paths.REPORT_DIR``."""
    out_dir = Path(out_dir)

    def rel(p: str) -> Path:
        return out_dir / Path(p).relative_to(paths.REPORT_DIR)

    return {
        "dir": out_dir,
        "summary_csv": rel(paths.SUMMARY_CSV),
        "metrics_json": rel(paths.REPORT_METRICS),
        "headline_json": rel(paths.REPORT_HEADLINE),
        "index_html": rel(paths.REPORT_HTML),
        "index_md": rel(paths.REPORT_MD),
        "figures": rel(paths.REPORT_FIGURES),
        "claims_csv": rel(paths.REPORT_CLAIMS),
        "plots": rel(paths.REPORT_PLOTS),
    }


def build_report(study: "Study", out_dir: str | Path | None = None, claims_path: str | Path = paths.CLAIMS) -> dict:
    """Read every cell of ``study`` and write the report files under ``out_dir`` (default ``reports/<study>``).

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

    inputs = collect.read_cells(study.name, cells)            # every input checked and read before any output
    records = [c.record for c in inputs]
    logs = {c.cell: c.log for c in inputs}
    summary = collect.summary_frame(records)
    frame = collect.summary_frame(records, include_cell=True)
    aggregate = collect.aggregate_over_seeds(records)
    diagnostics = flags.diagnose(inputs, datasets, models)
    comparisons = paired.paired_comparisons(inputs, datasets, models, diagnostics)
    metrics = {"models": aggregate, "comparisons": comparisons, "flags": flags.flags_json(diagnostics)}
    verdicts = claims_mod.check_claims(claims, inputs, datasets, models, diagnostics)

    out = output_paths(out_dir or paths.REPORT_DIR.format(study=study.name))
    published = list(study.config.source.published) if study.config.source else []
    figs = figures.write_figures(study.name, out["figures"], datasets, models, seeds, records, logs,
                                 published=published, sweeps=study.sweeps)
    plot_files = dvc_plots.write_plot_data(out["plots"], datasets, models, seeds, logs)
    doc = render.build_document(f"vaebench report: study {study.name}", datasets, models, seeds, frame,
                                aggregate, figs, comparisons, diagnostics, verdicts)
    html, markdown = render.render_html(doc), render.render_markdown(doc, out["dir"])

    write_json(out["metrics_json"], metrics)
    write_json(out["headline_json"], collect.headline(aggregate))
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
        "headline_json": str(out["headline_json"]),
        "claims_csv": str(out["claims_csv"]),
        "index_html": str(out["index_html"]),
        "index_md": str(out["index_md"]),
        "figures": sorted(str(p) for f in figs.values() for p in f.files()),
        "plots": sorted(str(p) for p in plot_files),
    }
