"""The report's figures (matplotlib on the non-interactive Agg backend), written atomically under ``figures/``.

Per dataset:

* ``<dataset>_validation_curves.png``: validation -ELBO and validation loss per epoch (nats/image, mean over
  seeds), one row of panels per likelihood family (field ``likelihood_family``);
* ``<dataset>_log_sigma_lambda.png``: decoder log sigma and GECO lambda per epoch, for the models that log
  them (no file when none does);
* ``<dataset>_<model>_seed<seed>_{samples,recon}.png``: copies of every cell's image grids.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vaebench import paths
from vaebench.atomic import atomic_path

TRACE_COLUMNS = ["log_sigma", "lambda"]
TRACE_LABELS = {"log_sigma": "log sigma (decoder)", "lambda": "GECO lambda"}


@dataclass
class DatasetFigures:
    """The figure files of one dataset: ``curves`` (validation curves), ``traces`` (log sigma / lambda, or
    None when no model logs them) and ``grids`` ({(model, seed): (samples, reconstructions)})."""

    curves: Path
    traces: Path | None
    grids: dict[tuple[str, int], tuple[Path, Path]] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Every file of this dataset's figures."""
        out = [p for p in (self.curves, self.traces) if p is not None]
        for pair in self.grids.values():
            out += list(pair)
        return out


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


def mean_over_seeds(frames: list[pd.DataFrame], column: str) -> pd.Series | None:
    """Per-epoch mean of ``column`` over the logs that have a value for it (None when none does);
    the index is the epoch."""
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


def likelihood_groups(records: list[dict], dataset: str, models: list[str]) -> dict[str, list[str]]:
    """``{likelihood_family: [models of dataset]}`` in grid order, from the records' ``likelihood_family``
    field (a model whose cells disagree is put under its first cell's family)."""
    groups: dict[str, list[str]] = {}
    for m in models:
        family = next((str(r.get("likelihood_family")) for r in records
                       if r["dataset"] == dataset and r["model"] == m), "unknown")
        groups.setdefault(family, []).append(m)
    return groups


def plot_validation_curves(dataset: str, groups: dict[str, list[str]], seeds: list, logs: dict,
                           path: Path) -> Path:
    """Validation -ELBO and validation training loss (nats/image) per epoch, mean over ``seeds``.

    ``groups`` maps a likelihood family to its models: one row of panels per family, because continuous
    and discrete likelihoods live on different scales and would flatten
    each other on a shared axis. ``logs`` maps (dataset, model, seed) to a training log with columns
    ``epoch``, ``val_elbo``, ``val_loss``. Returns ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.8 * len(groups)), squeeze=False)
    for row, (family, models) in zip(axes, groups.items()):
        for m in models:
            frames = [logs[(dataset, m, s)] for s in seeds]
            elbo = mean_over_seeds(frames, "val_elbo")
            loss = mean_over_seeds(frames, "val_loss")
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
    """log sigma and GECO lambda per epoch (mean over ``seeds``) for the models whose logs have them
    (columns of :data:`TRACE_COLUMNS`); one panel per quantity, lambda on a log scale when positive.
    Returns ``path``, or None (nothing written) when no model logs either."""
    series: dict[str, dict[str, pd.Series]] = {}
    for col in TRACE_COLUMNS:
        for m in models:
            s = mean_over_seeds([logs[(dataset, m, sd)] for sd in seeds], col)
            if s is not None:
                series.setdefault(col, {})[m] = s
    if not series:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4), squeeze=False)
    for ax, (col, by_model) in zip(axes[0], series.items()):
        for m, s in by_model.items():
            ax.plot(s.index, s.values, marker=".", label=m)
        if col == "lambda" and all((s > 0).all() for s in by_model.values()):
            ax.set_yscale("log")
        ax.set_title(f"{dataset}: {TRACE_LABELS[col]} per epoch")
        ax.set_xlabel(f"epoch (mean over {len(seeds)} seed(s))")
        _epoch_axis(ax)
        ax.set_ylabel(TRACE_LABELS[col])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def copy_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically; returns ``dst``."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def write_figures(fig_dir: Path, datasets: list[str], models: list[str], seeds: list, records: list[dict],
                  logs: dict) -> dict[str, DatasetFigures]:
    """Write every figure of the report under ``fig_dir``; returns ``{dataset: DatasetFigures}``.

    ``records`` are the cells' metrics records (for ``likelihood_family``), ``logs`` maps (dataset, model,
    seed) to its training log. Raises ``FileNotFoundError`` if a cell's image grid is missing.
    """
    fig_dir = Path(fig_dir)
    out: dict[str, DatasetFigures] = {}
    for d in datasets:
        grids = {}
        for m in models:
            for s in seeds:
                cell = paths.cell_paths(d, m, s)
                grids[(m, s)] = (
                    copy_file(cell["samples_png"], fig_dir / f"{d}_{m}_seed{s}_samples.png"),
                    copy_file(cell["recon_png"], fig_dir / f"{d}_{m}_seed{s}_recon.png"),
                )
        groups = likelihood_groups(records, d, models)
        out[d] = DatasetFigures(
            curves=plot_validation_curves(d, groups, seeds, logs, fig_dir / f"{d}_validation_curves.png"),
            traces=plot_traces(d, models, seeds, logs, fig_dir / f"{d}_log_sigma_lambda.png"),
            grids=grids,
        )
    return out
