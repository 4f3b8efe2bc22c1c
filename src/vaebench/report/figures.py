"""The report's figures (matplotlib, Agg backend), written atomically under figures/ with no time metadata."""
from __future__ import annotations

import io
import math
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench import paths
from vaebench.atomic import atomic_path
from vaebench.report.collect import LEVEL, is_number
from vaebench.metrics import spec as metric_spec
from vaebench.report.tables.results import space_short

DPI = 110  # resolution of every figure file (dots per inch)
TRACE_COLUMNS = ["log_sigma", "lambda"]
TRACKED_COLOURS = {"log_sigma": "#2ca02c", "effective_beta": "#9467bd", "lambda": "#d62728", "constraint": "#8c564b"}
TRACE_LABELS = {"log_sigma": "log sigma (decoder)", "lambda": "GECO lambda"}


@dataclass
class DatasetFigures:
    """The figure files of one dataset (None: not written, nothing to plot)."""

    curves: Path
    traces: Path | None
    grids: dict[tuple[str, int], tuple[Path, Path]] = field(default_factory=dict)
    rate_distortion: Path | None = None
    fid_nll: Path | None = None
    samples: Path | None = None
    recon: Path | None = None
    training: Path | None = None
    latent: Path | None = None
    test_curves: Path | None = None
    sweeps: Path | None = None
    video_scores: Path | None = None
    animation: Path | None = None
    captions: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Every file of this dataset's figures (the ones written; None fields skipped)."""
        out = [p for p in (self.curves, self.traces) if p is not None]
        for pair in self.grids.values():
            out += list(pair)
        out += [p for p in (self.rate_distortion, self.fid_nll, self.samples, self.recon, self.training,
                            self.latent, self.test_curves, self.sweeps, self.video_scores, self.animation)
                if p is not None]
        return out


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (``DPI``, tight bounding box, no metadata) and close it, in the
    smallest lossless mode (:func:`smallest_mode`)."""
    from PIL import Image

    plt = _pyplot()
    buf = io.BytesIO()
    # no "Software" (matplotlib version) metadata: the bytes depend on the inputs only
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    with Image.open(buf) as im, atomic_path(path) as tmp:
        smallest_mode(im).save(tmp, format="png")
    return path


def smallest_mode(image):
    """``image`` (a PIL image) losslessly in the smallest of the modes 'L' (grey), 'RGB' and 'RGBA': the alpha
    channel is dropped where every pixel is opaque, the colour channels where they are equal everywhere."""
    import numpy as np

    a = np.asarray(image.convert("RGBA"))
    if (a[..., 3] != 255).any():
        return image.convert("RGBA")
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        return image.convert("L")
    return image.convert("RGB")


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
    """Validation -ELBO and validation training loss (nats/image) per epoch, mean over ``seeds``."""
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
    """log sigma and GECO lambda per epoch (mean over ``seeds``) for the models whose logs have them (columns of
    :data:`TRACE_COLUMNS`); one panel per quantity, lambda on a log scale when positive."""
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



# tab10 then ten darker, distinct hues (spelled out so that a matplotlib style cannot restyle the report)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#393b79", "#637939", "#e6550d", "#843c39", "#7b4173", "#3182bd", "#31a354",
           "#8c6d31", "#636363")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def model_styles(models: list[str]) -> dict[str, tuple[str, str]]:
    """``{model: (colour, marker)}`` by position in ``models`` (the grid order), the same in every figure."""
    return {m: (COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(models)}


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (booleans excluded), else None (None, NaN, inf, text)."""
    if not is_number(v):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _seed_key(seed: Any) -> tuple:
    return (0, int(seed), "") if is_number(seed) else (1, 0, str(seed))


def _cells(records: list[dict], dataset: str, model: str) -> list[dict]:
    """The records of (dataset, model), sorted by seed (whatever the order of ``records``)."""
    return sorted((r for r in records if r.get("dataset") == dataset and r.get("model") == model),
                  key=lambda r: _seed_key(r.get("seed")))


def _space_of(cells: list[dict]) -> str | None:
    """The first cell's ``data_space`` that is a non-empty string (None when no cell has one)."""
    for r in cells:
        v = r.get("data_space")
        if isinstance(v, str) and v:
            return v
    return None


def _seeds_text(seeds: list) -> str:
    return ", ".join(str(s) for s in seeds)


def _wrap(lines: list[str], width: int = 110) -> str:
    """``lines`` wrapped at ``width`` characters, joined by newlines (for titles)."""
    return "\n".join(textwrap.fill(line, width) for line in lines if line)


def _note(reasons: dict[str, str]) -> str:
    """'Left out: a (reason); b (reason).' or '' when nothing was left out."""
    if not reasons:
        return ""
    return "Left out: " + "; ".join(f"{m} ({why})" for m, why in reasons.items()) + "."



@dataclass(frozen=True)
class Point:
    """One cell's point: ``x``, ``y`` in the figure's units, ``valid_density`` (False: the model's NLL is not
    a normalised density, drawn hollow), ``yerr`` (half-length of a vertical error bar, or None)."""

    model: str
    seed: Any
    x: float
    y: float
    valid_density: bool = True
    yerr: float | None = None


@dataclass
class ScatterPanel:
    """The points of one data space; ``hline`` a horizontal reference line (the FID floor) or None."""

    space: str
    points: list[Point] = field(default_factory=list)
    hline: float | None = None

    def models(self) -> list[str]:
        """The models with a point in this panel, in order of first appearance."""
        return list(dict.fromkeys(p.model for p in self.points))


@dataclass
class ScatterData:
    """What a per-data-space scatter figure plots: ``panels`` (one per data space, in
    the spec's data spaces then order of appearance, only spaces with a point), ``left_out`` ({model:
    reason} for a model left out of the figure or some of whose seeds are; partially plotted models appear
    in both) and ``notes`` (further remarks for the title)."""

    dataset: str
    x_key: str
    y_key: str
    panels: list[ScatterPanel] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def spaces(self) -> list[str]:
        """The data spaces, one per panel, in panel order."""
        return [p.space for p in self.panels]

    def panel(self, space: str) -> ScatterPanel:
        """The panel of ``space``; raises KeyError when no point lies in that space."""
        for p in self.panels:
            if p.space == space:
                return p
        raise KeyError(space)

    def invalid_models(self) -> list[str]:
        """Models drawn hollow (a point with ``valid_density`` False), in panel order."""
        return list(dict.fromkeys(p.model for panel in self.panels for p in panel.points if not p.valid_density))

    def note_lines(self) -> list[str]:
        """The title's remarks: hollow models, models left out, further notes."""
        lines = []
        invalid = self.invalid_models()
        if invalid:
            lines.append("Hollow markers: no valid density (" + ", ".join(invalid) + ").")
        lines.append(_note(self.left_out))
        return [line for line in lines + self.notes if line]


def _order_panels(by_space: dict[str, list[Point]]) -> list[ScatterPanel]:
    declared = list(metric_spec.DATA_SPACES)
    order = [s for s in declared if s in by_space] + [s for s in by_space if s not in declared]
    return [ScatterPanel(s, by_space[s]) for s in order if by_space[s]]


def _scatter_data(records: list[dict], dataset: str, models: list[str], x_key: str, y_key: str,
                  yerr_key: str | None = None, drop_invalid: bool = False) -> ScatterData:
    """One point per cell of ``dataset`` with finite ``x_key`` and ``y_key``, grouped by ``data_space``."""
    data = ScatterData(dataset, x_key, y_key)
    by_space: dict[str, list[Point]] = {}
    for m in models:
        cells = _cells(records, dataset, m)
        space = _space_of(cells)
        if not cells:
            data.left_out[m] = "no record"
            continue
        if space is None:
            data.left_out[m] = "no data_space"
            continue
        invalid = any(r.get("valid_density") is False for r in cells)
        if drop_invalid and invalid:
            data.left_out[m] = "no valid density"
            continue
        points, lacking = [], []
        for r in cells:
            x, y = _number(r.get(x_key)), _number(r.get(y_key))
            if x is None or y is None:
                lacking.append(r.get("seed"))
                continue
            yerr = _number(r.get(yerr_key)) if yerr_key else None
            points.append(Point(m, r.get("seed"), x, y, r.get("valid_density") is not False, yerr))
        if not points:
            data.left_out[m] = f"no {x_key} / {y_key}"
            continue
        if lacking:
            data.left_out[m] = f"seed {_seeds_text(lacking)} lacks {x_key} / {y_key}"
        by_space.setdefault(space, []).extend(points)
    data.panels = _order_panels(by_space)
    return data


def rate_distortion_data(records: list[dict], dataset: str, models: list[str]) -> ScatterData:
    """The rate-distortion points of ``dataset``: x = ``test_kl_nats`` (rate, KL(q(z|x) || p(z)), nats per image), y =
    ``test_recon_nats`` (distortion, -E_q log p(x|z), nats per image), one point per model and seed, one panel per
    ``data_space`` (binarised, dequantised and discrete likelihoods have different reconstruction scales)."""
    return _scatter_data(records, dataset, models, metric_spec.compared("kl").key, metric_spec.compared("recon").key)


def _floor(records: list[dict], dataset: str, key: str) -> tuple[float | None, str]:
    """The dataset's FID floor (median over its cells' finite ``key`` values; None when none has one) and a
    note when the cells disagree."""
    values = sorted({v for r in records if r.get("dataset") == dataset for v in [_number(r.get(key))]
                     if v is not None})
    if not values:
        return None, f"No {key}: no floor drawn."
    med = float(pd.Series(values).median())
    if values[-1] - values[0] > 1e-9 * max(1.0, abs(med)):
        return med, f"The cells' {key} differ ({values[0]:.3g} to {values[-1]:.3g}): their median is drawn."
    return med, ""


def fid_nll_data(records: list[dict], dataset: str, models: list[str], fid_key: str = metric_spec.compared("fid").key,
                 nll_key: str = metric_spec.compared("nll").key, floor_key: str = "fid_floor") -> ScatterData:
    """FID against NLL for ``dataset``: x = ``nll_key`` (IWAE bound on the test NLL, nats per image), y = ``fid_key``
    (FID of decoder-mean samples, mean over sample seeds, squared feature units) with error bar ``<fid_key>_std``
    (std over sample seeds) when present, one point per model and seed, one panel per ``data_space`` (NLLs of
    different data spaces are not comparable); every panel's ``hline`` is the dataset's ``floor_key`` (what real
    held-out images score)."""
    data = _scatter_data(records, dataset, models, nll_key, fid_key, yerr_key=f"{fid_key}_std",
                         drop_invalid=True)
    floor, note = _floor(records, dataset, floor_key)
    for p in data.panels:
        p.hline = floor
    if note:
        data.notes.append(note)
    return data


def _log_y_wanted(values: list[float]) -> bool:
    """A log axis when every value is positive and they span more than a factor 20 (for the plotted points;
    a reference line alone does not make the axis logarithmic)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 20


def _plot_scatter(data: ScatterData, path: Path, title: str, xlabel: str, ylabel: str,
                  styles: dict[str, tuple[str, str]], hline_label: str = "") -> Path | None:
    """Draw ``data`` (one panel per data space, a shared legend on the right); None when it has no panel."""
    if not data.panels:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    n = len(data.panels)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.3), squeeze=False)
    handles: dict[str, Line2D] = {}
    for ax, panel in zip(axes[0], data.panels):
        ys = []
        for m in panel.models():
            colour, marker = styles.get(m, (COLOURS[0], MARKERS[0]))
            pts = [p for p in panel.points if p.model == m]
            for hollow in (False, True):
                sub = [p for p in pts if p.valid_density == (not hollow)]
                if not sub:
                    continue
                # hollow markers on top, filled ones slightly transparent: overlapping models stay visible
                ax.scatter([p.x for p in sub], [p.y for p in sub], s=46 if hollow else 42, marker=marker,
                           linewidths=1.6 if hollow else 1.0, facecolors="none" if hollow else colour,
                           edgecolors=colour, alpha=1.0 if hollow else 0.8, zorder=4 if hollow else 3)
            err = [p for p in pts if p.yerr is not None]
            if err:
                ax.errorbar([p.x for p in err], [p.y for p in err], yerr=[p.yerr for p in err], fmt="none",
                            ecolor=colour, elinewidth=0.9, capsize=2, zorder=2)
            ys += [p.y for p in pts]
            hollow_only = all(not p.valid_density for p in pts)
            handles[m] = Line2D([], [], linestyle="none", marker=marker, markersize=7, markeredgewidth=1.4,
                                color=colour, markerfacecolor="none" if hollow_only else colour,
                                label=m + (" (no valid density)" if hollow_only else ""))
        log = _log_y_wanted(ys) and (panel.hline is None or panel.hline > 0)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="0.25", linestyle="--", linewidth=1.1, zorder=1)
            handles["\0hline"] = Line2D([], [], color="0.25", linestyle="--", linewidth=1.1,
                                        label=f"{hline_label} = {panel.hline:.3g}")
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{space_short(panel.space)} ({len(panel.models())} models)", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
        ax.grid(alpha=0.3)
    order = [m for m in styles if m in handles] + [k for k in handles if k not in styles]
    fig.legend(handles=[handles[k] for k in order], loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8,
               frameon=False)
    fig.suptitle(_wrap([title] + data.note_lines(), width=max(70, 62 * n)), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_rate_distortion(data: ScatterData, path: Path, styles: dict[str, tuple[str, str]] | None = None
                         ) -> Path | None:
    """Write the rate-distortion figure of :func:`rate_distortion_data` to ``path`` (PNG): KL (nats/image) on x,
    reconstruction -E log p(x|z) (nats/image) on y, one panel per data space, colour and marker per model
    (``styles``, default :func:`model_styles` of the plotted models), hollow markers for models without a valid
    density, left-out models named in the title."""
    styles = styles or model_styles([m for p in data.panels for m in p.models()])
    return _plot_scatter(data, path, f"{data.dataset}: rate-distortion on the test set, one point per model "
                         f"and training seed (rate + distortion = -ELBO)",
                         "rate: KL(q(z|x) || p(z)) (nats/image)", "distortion: -E_q log p(x|z) (nats/image)",
                         styles)


def plot_fid_nll(data: ScatterData, path: Path, styles: dict[str, tuple[str, str]] | None = None) -> Path | None:
    """Write the FID-against-NLL figure of :func:`fid_nll_data` to ``path`` (PNG): NLL (nats/image) on x, FID on y
    (log scale when the points are positive and span more than a factor 20) with the std over sample seeds as error
    bars, the FID floor as a dashed line, one panel per data space, colour and marker per model (``styles``,
    default :func:`model_styles` of the plotted models), left-out models named in the title."""
    styles = styles or model_styles([m for p in data.panels for m in p.models()])
    return _plot_scatter(data, path, f"{data.dataset}: FID ({data.y_key}) against test NLL ({data.x_key}), "
                         f"one point per model and training seed; lower is better on both axes",
                         "test NLL, IWAE bound (nats/image)", "FID (bars: std over sample seeds)", styles,
                         hline_label="FID floor (held-out real images)")



IMAGE_KINDS = {"samples": "samples_png", "recon": "recon_png"}


def image_panels(study: str, dataset: str, models: list[str], seed: Any, kind: str) -> list[tuple[str, Path]]:
    """``[(model, path)]``: the ``kind`` grid ('samples' or 'recon') of every model's cell (dataset, model, seed) of ``study`` at
    the :func:`vaebench.paths.cell_paths` location, in ``models`` order (existence not checked)."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"image_panels: kind must be one of {sorted(IMAGE_KINDS)}, got {kind!r}")
    return [(m, paths.cell_paths(study, dataset, m, seed)[IMAGE_KINDS[kind]]) for m in models]


@dataclass
class ImageLayout:
    """Pixel layout of :func:`plot_image_panels`: ``scale`` (output pixels per image pixel, an integer),
    ``ncols`` x ``nrows`` panels of ``panel_w`` x ``panel_h`` output pixels each (the largest image, scaled),
    ``shown`` (models drawn, row-major), ``missing`` (models whose file is missing or unreadable)."""

    scale: int
    ncols: int
    nrows: int
    panel_w: int
    panel_h: int
    shown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _load_rgb(path: Path):
    """The image at ``path`` as an (H, W, 3) uint8 array, or None when it is missing or unreadable."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError):
        return None


def image_layout(sizes: dict[str, tuple[int, int]], missing: list[str] | None = None, scale: int | None = None,
                 max_width_px: int = 2000) -> ImageLayout:
    """The panel grid for images of ``sizes`` ({model: (height, width) in pixels}, drawing order)."""
    if not sizes:
        raise ValueError("image_layout: no image")
    h = max(s[0] for s in sizes.values())
    w = max(s[1] for s in sizes.values())
    scale = max(1, 256 // w) if scale is None else int(scale)
    if scale < 1:
        raise ValueError(f"image_layout: scale must be >= 1, got {scale}")
    n = len(sizes)
    ncols = max(1, min(n, max_width_px // (w * scale + _PAD)))
    nrows = math.ceil(n / ncols)
    ncols = math.ceil(n / nrows)
    return ImageLayout(scale, ncols, nrows, w * scale, h * scale, list(sizes), list(missing or []))


_PAD = 14       # pixels between panels
_TITLE_PX = 20  # pixels above each panel for the model name


def plot_image_panels(panels: list[tuple[str, Path]], path: Path, title: str, scale: int | None = None,
                      height: int | None = None) -> tuple[Path | None, ImageLayout | None]:
    """Write one figure with every image of ``panels`` ([(model, PNG path)]) in a grid of panels titled with the
    model, all at one pixel scale (nearest-neighbour, one image pixel = ``scale`` x ``scale`` output pixels, see
    :func:`image_layout`; a smaller image sits at its panel's top left, unstretched). ``height``: show only each
    image's top ``height`` pixel rows."""
    images, missing = {}, []
    for m, p in panels:
        img = _load_rgb(Path(p))
        if img is None:
            missing.append(m)
        else:
            images[m] = img if height is None else img[:height]
    if not images:
        return None, None
    layout = image_layout({m: img.shape[:2] for m, img in images.items()}, missing, scale)
    lines = [title] + ([f"Missing: {', '.join(missing)}."] if missing else [])
    head = 16 * (len(lines) + 1)
    fig_w = layout.ncols * (layout.panel_w + _PAD) + _PAD
    fig_h = head + layout.nrows * (_TITLE_PX + layout.panel_h + _PAD)
    plt = _pyplot()
    fig = plt.figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
    for i, (m, img) in enumerate(images.items()):
        r, c = divmod(i, layout.ncols)
        left = _PAD + c * (layout.panel_w + _PAD)
        top = head + r * (_TITLE_PX + layout.panel_h + _PAD) + _TITLE_PX
        ax = fig.add_axes((left / fig_w, 1 - (top + layout.panel_h) / fig_h, layout.panel_w / fig_w,
                           layout.panel_h / fig_h))
        ih, iw = img.shape[:2]
        ax.imshow(img, interpolation="nearest", extent=(0, iw, ih, 0), aspect="auto")
        ax.set_xlim(0, layout.panel_w / layout.scale)
        ax.set_ylim(layout.panel_h / layout.scale, 0)
        ax.set_axis_off()
        ax.set_title(m, fontsize=9, pad=3)
    fig.text(0.5, 1 - 6 / fig_h, "\n".join(lines), ha="center", va="top", fontsize=10)
    return _save(fig, path), layout



# key: (log column, sign, legend label, colour, axis label)
QUANTITIES = {
    "neg_val_elbo": ("val_elbo", -1.0, "validation -ELBO (nats/image)", "#000000", "-ELBO (nats/image)"),
    "val_recon": ("val_recon", 1.0, "validation reconstruction -E log p(x|z) (nats/image)", "#1f77b4",
                  "reconstruction (nats/image)"),
    "val_kl": ("val_kl", 1.0, "validation KL(q(z|x) || p(z)) (nats/image)", "#ff7f0e", "KL (nats/image)"),
} | {s.name: (s.name, 1.0, s.label, TRACKED_COLOURS.get(s.name, "#7f7f7f"), s.axis_label)
     for s in metric_spec.TRACKED.values()}
# (panel title, quantities): the first quantity present uses the left axis, the others a right axis
TRAINING_PANELS = (
    ("validation -ELBO, reconstruction (nats/image)", ("neg_val_elbo", "val_recon")),
    ("validation KL (nats/image)", ("val_kl",)),
    ("log sigma | effective beta", ("log_sigma", "effective_beta")),
    ("GECO lambda | constraint", ("lambda", "constraint")),
)
_SHARED_AXIS = {"neg_val_elbo": "val_recon", "val_recon": "neg_val_elbo"}  # same units, same axis


@dataclass
class Curves:
    """One quantity of one model: ``per_seed`` ({seed: per-epoch values, indexed by epoch}) and ``mean``
    (per epoch, mean over the seeds that have a value at that epoch)."""

    per_seed: dict[Any, pd.Series]
    mean: pd.Series


def _log_series(frame: pd.DataFrame | None, column: str, sign: float) -> pd.Series | None:
    """``sign * frame[column]`` indexed by epoch (NaN rows dropped, repeated epochs averaged); None when the
    log, its ``epoch`` column or any value of ``column`` is missing."""
    if frame is None or "epoch" not in frame.columns or column not in frame.columns:
        return None
    values = pd.to_numeric(frame[column], errors="coerce")
    epochs = pd.to_numeric(frame["epoch"], errors="coerce")
    ok = values.notna() & epochs.notna()
    if not ok.any():
        return None
    s = pd.Series(sign * values[ok].to_numpy(dtype=float), index=epochs[ok].to_numpy())
    return s.groupby(level=0).mean().sort_index()


def training_curve_data(dataset: str, models: list[str], seeds: list, logs: dict) -> dict[str, dict[str, Curves]]:
    """``{model: {quantity: Curves}}`` for every quantity of :data:`QUANTITIES` that some seed of the model logs:
    validation -ELBO (``-val_elbo``), ``val_recon``, ``val_kl`` (nats/image), ``log_sigma``, ``effective_beta``,
    GECO ``lambda`` and ``constraint``, per epoch."""
    out: dict[str, dict[str, Curves]] = {}
    for m in models:
        for q, (col, sign, *_) in QUANTITIES.items():
            per_seed = {}
            for s in seeds:
                series = _log_series(logs.get((dataset, m, s)), col, sign)
                if series is not None:
                    per_seed[s] = series
            if per_seed:
                mean = pd.concat(list(per_seed.values()), axis=1).mean(axis=1).sort_index()
                out.setdefault(m, {})[q] = Curves(per_seed, mean)
    return out


def training_columns(data: dict[str, dict[str, Curves]]) -> list[int]:
    """Indices into :data:`TRAINING_PANELS` of the columns some model has a quantity for (the others are
    hidden)."""
    return [i for i, (_, qs) in enumerate(TRAINING_PANELS) if any(q in c for c in data.values() for q in qs)]


def _draw_curves(ax, curves: Curves, colour: str) -> None:
    for s in sorted(curves.per_seed, key=_seed_key):
        series = curves.per_seed[s]
        ax.plot(series.index, series.values, color=colour, linewidth=0.7, alpha=0.45)
    ax.plot(curves.mean.index, curves.mean.values, color=colour, linewidth=1.9, marker=".", markersize=5)


def plot_training_curves(data: dict[str, dict[str, Curves]], dataset: str, path: Path,
                         models: list[str] | None = None) -> Path | None:
    """Write the training curves of :func:`training_curve_data` to ``path`` (PNG): one row per model (in ``models``
    order, default ``data``'s), one column per panel of :data:`TRAINING_PANELS` that some model has (validation
    -ELBO and reconstruction | KL, nats/image | log sigma, effective beta on a right axis | GECO lambda, constraint
    on a right axis); every seed a thin line, the mean over seeds thick."""
    models = list(data) if models is None else list(models)
    rows = [m for m in models if data.get(m)]
    cols = training_columns({m: data[m] for m in rows})
    if not rows or not cols:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig = plt.figure(figsize=(3.9 * len(cols), 2.1 * len(rows) + 1.0), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    used = []
    for r, m in enumerate(rows):
        for c, i in enumerate(cols):
            ax = axes[r][c]
            _, qs = TRAINING_PANELS[i]
            present = [q for q in qs if q in data[m]]
            if not present:
                ax.set_visible(False)
                continue
            left = [present[0]] + [q for q in present[1:] if _SHARED_AXIS.get(q) == present[0]]
            right = [q for q in present if q not in left]
            for axis, group in ((ax, left), (ax.twinx() if right else None, right)):
                if axis is None:
                    continue
                for q in group:
                    _draw_curves(axis, data[m][q], QUANTITIES[q][3])
                    used.append(q)
                if group == ["lambda"] and _log_y_wanted(
                        [float(v) for s in data[m]["lambda"].per_seed.values() for v in s.values]):
                    axis.set_yscale("log")
                if len(group) == 1:
                    axis.set_ylabel(QUANTITIES[group[0]][4], color=QUANTITIES[group[0]][3], fontsize=8)
                else:
                    axis.set_ylabel("-ELBO, reconstruction (nats/image)", fontsize=8)
                axis.tick_params(labelsize=7)
                if axis.get_yscale() == "linear":
                    axis.ticklabel_format(axis="y", useOffset=False)
            ax.set_title(m, fontsize=9, fontweight="bold")
            ax.set_xlabel("epoch", fontsize=8)
            _epoch_axis(ax)
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=QUANTITIES[q][3], linewidth=1.9, label=QUANTITIES[q][2])
               for q in QUANTITIES if q in used]
    handles.append(Line2D([], [], color="0.4", linewidth=0.7, alpha=0.6, label="single seeds"))
    lost = [m for m in models if m not in rows]
    lines = [f"{dataset}: training curves per model (validation set; thick: mean over seeds, thin: each seed)"]
    if lost:
        lines.append(f"No logged quantity: {', '.join(lost)}.")
    # the title as the legend's title: constrained layout stacks an outside legend and a suptitle badly
    fig.legend(handles=handles, loc="outside upper center", ncol=min(4, len(handles)), fontsize=8, frameon=False,
               title=_wrap(lines), title_fontsize=10)
    return _save(fig, path)



LATENT_METRICS = {k: metric_spec.FIELDS[k].label
                  for k in ("latent_rate_nats", "latent_mutual_info_nats", "latent_marginal_kl_nats")}
LATENT_COLOURS = {"latent_rate_nats": "#1f77b4", "latent_mutual_info_nats": "#ff7f0e",
                  "latent_marginal_kl_nats": "#2ca02c", "active_units": "#7f7f7f"}


@dataclass(frozen=True)
class SeedStat:
    """A metric over training seeds: ``mean``, ``half_width`` of the Student-t interval at ``level`` (None
    with one seed), ``n`` seeds, the seed ``values``."""

    mean: float
    half_width: float | None
    n: int
    values: tuple[float, ...]
    level: float = LEVEL


def seed_stat(values: list[float], level: float = LEVEL) -> SeedStat:
    """Mean and Student-t interval half-width t_{n-1, (1+level)/2} * std(ddof=1) / sqrt(n) of ``values``
    (finite floats, one per seed), computed by :func:`vaebench.metrics.uncertainty.seed_summary` (the report's
    tables use the same). Raises ``ValueError`` for an empty or non-finite input or a level outside (0, 1)."""
    from vaebench.metrics.uncertainty import seed_summary

    s = seed_summary(values, level)
    half = None if s["ci_high"] is None else float(s["ci_high"] - s["mean"])
    return SeedStat(float(s["mean"]), half, int(s["n_seeds"]), tuple(float(v) for v in values), level)


@dataclass
class LatentData:
    """What :func:`plot_latent` draws: ``stats`` ({model: {metric: SeedStat}}, models with at least one
    metric), ``latent_dim`` ({model: latent dimension} when recorded), ``log_n`` (upper bound log N of the
    mutual information estimate, None when the cells disagree or lack it), ``left_out`` ({model: reason}
    for a model or metric not drawn)."""

    dataset: str
    stats: dict[str, dict[str, SeedStat]] = field(default_factory=dict)
    latent_dim: dict[str, int] = field(default_factory=dict)
    log_n: float | None = None
    left_out: dict[str, str] = field(default_factory=dict)


def latent_summary(records: list[dict], dataset: str, models: list[str], level: float = LEVEL) -> LatentData:
    """The latent analysis of ``dataset`` per model, over its seeds: ``latent_rate_nats``,
    ``latent_mutual_info_nats``, ``latent_marginal_kl_nats`` (nats) and ``active_units`` (count), each a
    :class:`SeedStat` over the cells with a finite value (the seeds without one are named in ``left_out``)."""
    data = LatentData(dataset)
    keys = list(LATENT_METRICS) + ["active_units"]
    log_ns = set()
    for m in models:
        cells = _cells(records, dataset, m)
        if not cells:
            data.left_out[m] = "no record"
            continue
        reasons = []
        for k in keys:
            values = [(r.get("seed"), _number(r.get(k))) for r in cells]
            finite = [v for _, v in values if v is not None]
            lacking = [s for s, v in values if v is None]
            if finite:
                data.stats.setdefault(m, {})[k] = seed_stat(finite, level)
            if lacking:
                reasons.append(f"no {k}" + ("" if not finite else f" for seed {_seeds_text(lacking)}"))
        dims = [_number(r.get("latent_dim")) for r in cells]
        dims = [int(d) for d in dims if d is not None]
        if dims:
            data.latent_dim[m] = max(dims)
        log_ns |= {v for r in cells for v in [_number(r.get("latent_log_n_nats"))] if v is not None}
        if m not in data.stats:
            data.left_out[m] = "no latent metric"
        elif reasons:
            data.left_out[m] = ", ".join(reasons)
    if len(log_ns) == 1:
        data.log_n = log_ns.pop()
    return data


def plot_latent(data: LatentData, path: Path, models: list[str] | None = None) -> Path | None:
    """Write the latent-analysis bars of :func:`latent_summary` to ``path`` (PNG): left, per model (one row, in
    ``models`` order, default ``data.stats``'), the rate, mutual information and marginal KL (nats), with log N
    (the upper bound of the MI estimate) as a dotted line; right, the active units with the latent dimension as a
    black tick."""
    models = list(data.stats) if models is None else [m for m in models if m in data.stats]
    if not models:
        return None
    import numpy as np

    plt = _pyplot()
    level = next(s.level for st in data.stats.values() for s in st.values())
    n = len(models)
    fig, (ax, ax_units) = plt.subplots(1, 2, figsize=(12.5, 1.2 + 0.42 * n * 1.6),
                                       gridspec_kw={"width_ratios": [2.2, 1]}, sharey=True)
    y = np.arange(n)[::-1].astype(float)  # first model on top
    height = 0.8 / len(LATENT_METRICS)
    for j, (k, label) in enumerate(LATENT_METRICS.items()):
        offset = (1 - j) * height
        rows = [(y[i] + offset, data.stats[m][k]) for i, m in enumerate(models) if k in data.stats[m]]
        if not rows:
            continue
        ax.barh([r[0] for r in rows], [r[1].mean for r in rows], height=height * 0.95, color=LATENT_COLOURS[k],
                label=label)
        err = [r for r in rows if r[1].half_width is not None]
        if err:
            ax.errorbar([r[1].mean for r in err], [r[0] for r in err], xerr=[r[1].half_width for r in err],
                        fmt="none", ecolor="0.15", elinewidth=0.9, capsize=2)
    if data.log_n is not None:
        ax.axvline(data.log_n, color="0.3", linestyle=":", linewidth=1.2,
                   label=f"log N = {data.log_n:.2f} (upper bound of the MI estimate)")
    rows = [(y[i], data.stats[m]["active_units"]) for i, m in enumerate(models) if "active_units" in data.stats[m]]
    if rows:
        ax_units.barh([r[0] for r in rows], [r[1].mean for r in rows], height=0.6,
                      color=LATENT_COLOURS["active_units"], label="active units")
        err = [r for r in rows if r[1].half_width is not None]
        if err:
            ax_units.errorbar([r[1].mean for r in err], [r[0] for r in err], xerr=[r[1].half_width for r in err],
                              fmt="none", ecolor="0.15", elinewidth=0.9, capsize=2)
    dims = [(y[i], data.latent_dim[m]) for i, m in enumerate(models) if m in data.latent_dim]
    if dims:
        ax_units.scatter([d for _, d in dims], [p for p, _ in dims], marker="|", s=260, color="black",
                         linewidths=2, zorder=3, label="latent dimension")
    ax.set_yticks(y, models)
    ax.set_ylim(-0.6, n - 0.4)
    interval = f"error bars: {level:.0%} Student-t interval over seeds"
    ax.set_xlabel(f"nats (bars: mean over seeds; {interval})")
    ax_units.set_xlabel(f"active units (mean over seeds;\n{interval})")
    ax_units.set_xlim(left=0)
    for a in (ax, ax_units):
        a.grid(axis="x", alpha=0.3)
        a.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    lines = [f"{data.dataset}: latent analysis per model (test images)", _note(data.left_out)]
    fig.suptitle(_wrap(lines), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def copy_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically; returns ``dst``."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def write_figures(study: str, fig_dir: Path, datasets: list[str], models: list[str], seeds: list, records: list[dict],
                  logs: dict, published: list | None = None,
                  sweeps: dict[str, tuple[str, dict]] | None = None) -> dict[str, DatasetFigures]:
    """Write every figure of the report of ``study`` under ``fig_dir``; returns ``{dataset: DatasetFigures}``.
    ``published``: the study's published numbers (``source.published``), drawn beside ours; ``sweeps``: the study's
    sweep points (:attr:`vaebench.config.Study.sweeps`)."""
    fig_dir = Path(fig_dir)
    out: dict[str, DatasetFigures] = {}
    styles = model_styles(models)
    for d in datasets:
        grids = {}
        for m in models:
            for s in seeds:
                cell = paths.cell_paths(study, d, m, s)
                grids[(m, s)] = (
                    copy_file(cell["samples_png"], fig_dir / f"{d}_{m}_seed{s}_samples.png"),
                    copy_file(cell["recon_png"], fig_dir / f"{d}_{m}_seed{s}_recon.png"),
                )
        groups = likelihood_groups(records, d, models)
        fig = DatasetFigures(
            curves=plot_validation_curves(d, groups, seeds, logs, fig_dir / f"{d}_validation_curves.png"),
            traces=plot_traces(d, models, seeds, logs, fig_dir / f"{d}_log_sigma_lambda.png"),
            grids=grids,
        )
        captions = fig.captions

        rd = rate_distortion_data(records, d, models)
        fig.rate_distortion = plot_rate_distortion(rd, fig_dir / f"{d}_rate_distortion.png", styles)
        captions["rate_distortion"] = " ".join(
            ["Rate (test KL(q(z|x) || p(z))) against distortion (test -E_q log p(x|z)), nats per image, one point "
             "per model and training seed; one panel per data space, whose reconstruction scales differ."]
            + rd.note_lines())

        fn = fid_nll_data(records, d, models)
        fig.fid_nll = plot_fid_nll(fn, fig_dir / f"{d}_fid_vs_nll.png", styles)
        captions["fid_nll"] = " ".join(
            [f"FID of decoder-mean samples ({fn.y_key}, error bars: std over sample seeds) against the test NLL "
             f"({fn.x_key}, nats per image), one point per model and training seed, one panel per data space; "
             f"dashed: the FID floor of held-out real images."] + fn.note_lines())

        frames = scored_frames(records, d)
        video = frames is not None
        if seeds:
            first = seeds[0]
            kinds = VIDEO_GRIDS if video else (("samples", "Samples (decoder means of z ~ p(z))"),
                                               ("recon", "Reconstructions (rows of test images, each followed by "
                                                         "their reconstructions)"))
            for kind, what in kinds:
                panels = image_panels(study, d, models, first, kind)
                height = (video_rows_height(panels, frames, kind, VIDEO_SEQUENCES_SHOWN) if video else None)
                written, layout = plot_image_panels(
                    panels, fig_dir / f"{d}_{kind}_by_model.png",
                    f"{d}: {what.split(' (')[0].lower()} of every model, seed {first}, same pixel scale", height=height)
                setattr(fig, kind, written)
                if layout is not None:
                    captions[kind] = (f"{what} of every model, training seed {first}, side by side at one scale "
                                      f"({layout.scale} output pixel(s) per image pixel, nearest neighbour)"
                                      + (f", the first {VIDEO_SEQUENCES_SHOWN} test sequences" if video else "")
                                      + "." + (f" Missing: {', '.join(layout.missing)}." if layout.missing else ""))

        tc = training_curve_data(d, models, seeds, logs)
        fig.training = plot_training_curves(tc, d, fig_dir / f"{d}_training_curves.png", models)
        lost = [m for m in models if m not in tc]
        captions["training"] = (
            "Per model (rows): validation -ELBO and reconstruction, KL (nats per image), decoder log sigma and "
            "effective beta, GECO lambda and constraint per epoch, where logged; thin lines: single seeds, "
            "thick: their mean." + (f" No logged quantity: {', '.join(lost)}." if lost else ""))

        if not video:                                   # sequence models: the video table has their latent use
            lat = latent_summary(records, d, models)
            fig.latent = plot_latent(lat, fig_dir / f"{d}_latent.png", models)
            captions["latent"] = " ".join(
                ["Latent analysis per model: rate, mutual information I(x; z) and marginal KL(q(z) || p(z)) in nats, "
                 "and active units out of the latent dimension; bars: mean over training seeds, error bars: "
                 f"{LEVEL:.0%} Student-t interval over seeds (none with one seed).", _note(lat.left_out)]).strip()

        if video:
            fig.video_scores = plot_video_scores(records, d, models, fig_dir / f"{d}_video_scores.png", styles)
            captions["video_scores"] = (
                "SSIM and PSNR of every predicted frame against the true one (frames after the n_past conditioning "
                "frames), mean over test sequences and training seeds: solid, the best of N sampled continuations "
                "per frame (the per-frame maximum); dashed, the single sample of best mean SSIM; dotted, one sample "
                "(the mean over samples). SSIM: 7x7 uniform window, data range 1 (SVG's scikit-image defaults).")
            shown = [(m, grids[(m, seeds[0])][0]) for m in models if seeds and (m, seeds[0]) in grids]
            if shown and frames is not None:
                fig.animation = continuations_gif(shown, frames, fig_dir / f"{d}_continuations_seed{seeds[0]}.gif",
                                                  VIDEO_SEQUENCES_SHOWN)
                captions["animation"] = (
                    f"Training seed {seeds[0]}, one line per shown test sequence (the first {VIDEO_SEQUENCES_SHOWN}): "
                    f"the true frames, then each model's continuation of best mean SSIM ({', '.join(m for m, _ in shown)}, "
                    f"in this order), side by side, frame by frame (frames 1..T-1; the first n_past - 1 are the "
                    f"true conditioning frames).")
        fig.test_curves = plot_test_curves(d, models, seeds, logs, published or [], fig_dir / f"{d}_test_curves.png")
        if fig.test_curves is not None:
            captions["test_curves"] = (
                "Test loss (-ELBO on the whole test split, nats per image) after every epoch (train.test_curve), mean "
                "over training seeds with the range of the seeds shaded; stars: the published values at the "
                "source's last epoch (the study's source.published), whose data space may differ (see its "
                "deviations).")
        fig.sweeps = plot_sweeps(d, records, sweeps or {}, published or [], fig_dir / f"{d}_sweeps.png")
        if fig.sweeps is not None:
            captions["sweeps"] = (
                "Every recorded metric against the swept setting, one line per sweep: mean over training seeds with "
                f"its {LEVEL:.0%} Student-t interval; stars: the published values of the same model and metric.")
        out[d] = fig
    return out


VIDEO_GRIDS = (("samples", "Continuations (per test sequence three rows of frames 1..T-1: the true frames, the "
                            "continuation of best mean SSIM and another one; their first n_past - 1 frames are the "
                            "true conditioning frames)"),
               ("recon", "Teacher-forced reconstructions (per test sequence its true frames 1..T-1 over the model's "
                         "predictions from the true previous frames at the posterior means)"))


VIDEO_SEQUENCES_SHOWN = 1   # test sequences in the report's video figures (every one shown is in figures/)


def video_tile(width: int, frames: int, padding: int = 2) -> int:
    """The side in pixels of the square frames of a sequence model's grid ``width`` pixels wide that holds
    ``frames`` frames per row with ``padding`` (:func:`vaebench.grids.grid_image`). Raises ValueError when it does
    not hold them."""
    tile = (width - padding) // max(frames, 1) - padding
    if frames < 1 or tile < 1 or (tile + padding) * frames + padding != width:
        raise ValueError(f"a grid {width} pixels wide does not hold {frames} frames per row with padding {padding}")
    return tile


def video_rows_height(panels: list[tuple[str, Path]], frames: int | None, kind: str, sequences: int,
                      padding: int = 2) -> int | None:
    """Pixel rows of the first ``sequences`` test sequences of a sequence model's ``kind`` grid ('samples' or
    'recon', :data:`vaebench.paths.VIDEO_GRID_ROWS` rows each), from the first readable grid of ``panels``; None
    when none is readable or ``frames`` is None. Raises ValueError from :func:`video_tile`."""
    img = next((i for i in (_load_rgb(Path(p)) for _, p in panels) if i is not None), None)
    if img is None or frames is None:
        return None
    step = video_tile(img.shape[1], frames, padding) + padding
    return sequences * len(paths.VIDEO_GRID_ROWS[IMAGE_KINDS[kind]]) * step + padding


def continuations_gif(panels: list[tuple[str, Path]], frames: int, path: Path, sequences: int, padding: int = 2,
                      ms_per_frame: int = 250) -> Path:
    """An animated GIF of the continuation grids of several sequence models (``panels``: [(model, evaluate's
    ``samples_png``)], rows of ``frames`` tiles with ``padding``, :data:`vaebench.paths.VIDEO_GRID_ROWS` rows per
    test sequence): GIF frame t shows, for each of the first ``sequences`` test sequences, tile t of its true frames
    and of each model's best continuation side by side, one line per sequence, models in ``panels`` order.

    Raises:
        ValueError: no panel; a grid that does not hold ``frames`` tiles per row (:func:`video_tile`), is not the
            size of the first one, or whose true frames differ from the first one's (another test subset).
    """
    import numpy as np
    from PIL import Image

    if not panels:
        raise ValueError("continuations_gif: no grid")
    grids = {}
    for m, p in panels:
        grids[m] = np.asarray(Image.open(p).convert("RGB"))
    first = next(iter(grids.values()))
    tile = video_tile(first.shape[1], frames, padding)
    step = tile + padding
    rows = len(paths.VIDEO_GRID_ROWS["samples_png"])
    sequences = max(1, min(sequences, (first.shape[0] - padding) // step // rows))
    truth_rows = sequences * rows * step + padding
    mask = _truth_mask(truth_rows, rows, step)
    for m, g in grids.items():
        if g.shape != first.shape or not np.array_equal(g[:truth_rows][mask], first[:truth_rows][mask]):
            raise ValueError(f"continuations_gif: {m}'s grid {dict(panels)[m]} is not of the same test sequences "
                             f"and size as {next(iter(grids))}'s")
    columns = 1 + len(grids)
    images = []
    for t in range(frames):
        canvas = np.zeros((sequences * step + padding, columns * step + padding, 3), dtype=np.uint8)
        left = padding + t * step
        for i in range(sequences):
            top = padding + i * rows * step
            tiles = [first[top:top + tile, left:left + tile]] + [
                g[top + step:top + step + tile, left:left + tile] for g in grids.values()]
            for j, x in enumerate(tiles):
                canvas[padding + i * step:padding + i * step + tile, padding + j * step:padding + j * step + tile] = x
        images.append(smallest_mode(Image.fromarray(canvas)))
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="gif", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def _truth_mask(height: int, rows: int, step: int):
    """Boolean mask over ``height`` pixel rows of a video grid: the rows of the true frames (the first of every
    ``rows`` rows of tiles of ``step`` pixels)."""
    import numpy as np

    return (np.arange(height) // step) % rows == 0


def scored_frames(records: list[dict], dataset: str) -> int | None:
    """The frames scored per test sequence of ``dataset``'s sequence models (their records' ``scored_frames``);
    None for a dataset of single images."""
    return next((int(r["scored_frames"]) for r in records if r.get("dataset") == dataset
                 and r.get("scored_frames") is not None), None)


def plot_video_scores(records: list[dict], dataset: str, models: list[str], path: Path,
                      styles: dict[str, tuple[str, str]] | None = None) -> Path | None:
    """SSIM and PSNR per predicted frame, one line per model and kind (best of N, best sample, one sample: the
    mean over seeds of each record's per-frame list; one sample has no per-frame list and is a flat line at its
    mean); None when no record of ``dataset`` has them."""
    import numpy as np

    kinds = (("best_per_frame", "-", "best of N"), ("best_sample_per_frame", "--", "best sample"),
             ("sample", ":", "one sample"))
    series: dict[str, dict[str, np.ndarray]] = {}
    for m in models:
        cells = [r for r in _cells(records, dataset, m) if r.get("ssim_best_per_frame")]
        if cells:
            series[m] = {f"{s}_{k}": np.mean([np.atleast_1d(np.asarray(c[f"{s}_{k}"], dtype=float)) for c in cells],
                                             axis=0)
                         for s in ("ssim", "psnr") for k, _, _ in kinds}
            series[m]["start"] = int(cells[0]["n_past"]) + 1
            series[m]["n"] = len(cells[0]["ssim_best_per_frame"])
    if not series:
        return None
    plt = _pyplot()
    styles = styles or model_styles(models)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, score, label in zip(axes, ("ssim", "psnr"), ("SSIM", "PSNR (dB)")):
        for m, v in series.items():
            frames = np.arange(v["start"], v["start"] + v["n"])
            for k, line, what in kinds:
                y = v[f"{score}_{k}"]
                ax.plot(frames, np.broadcast_to(y, frames.shape), line, color=styles[m][0],
                        label=f"{m}, {what}" if score == "ssim" else None)
        ax.set_xlabel("predicted frame (1-based)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"{dataset}: video prediction, best of N continuations")
    fig.tight_layout(rect=(0, 0.12 + 0.03 * len(series), 1, 1))
    return _save(fig, path)


def plot_test_curves(dataset: str, models: list[str], seeds: list, logs: dict, published: list,
                     path: Path) -> Path | None:
    """Write the per-epoch test loss (the ``test_loss`` column of the training logs, keyed (dataset, model, seed))
    of every model that logged it, mean and range over seeds, with the published ``test_elbo_nats`` values of
    ``published`` (negated: a loss) at the last epoch; None when no model logged a test loss."""
    import pandas as pd

    frames = {m: [logs[(dataset, m, s)] for s in seeds
                  if (dataset, m, s) in logs and "test_loss" in logs[(dataset, m, s)]] for m in models}
    frames = {m: f for m, f in frames.items() if f}
    if not frames:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for m, fs in frames.items():
        g = pd.concat(fs)[["epoch", "test_loss"]].groupby("epoch")["test_loss"]
        mean = g.mean()
        (line,) = ax.plot(mean.index, mean.values, marker=".", label=f"{m} (ours, {len(fs)} seeds)")
        ax.fill_between(mean.index, g.min().values, g.max().values, color=line.get_color(), alpha=0.2, linewidth=0)
        for p in published:
            if (p.dataset, p.model, p.metric) == (dataset, m, "test_elbo_nats"):
                ax.scatter([mean.index.max()], [-p.value], marker="*", s=160, color=line.get_color(),
                           edgecolor="black", zorder=5, label=f"{m} published: {-p.value:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss, -ELBO (nats per image)")
    ax.set_title(f"{dataset}: test loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


SWEEP_SKIPPED = ("seconds",)   # record keys that describe the run, not the model


def plot_sweeps(dataset: str, records: list[dict], sweeps: dict[str, tuple[str, dict]], published: list,
                path: Path) -> Path | None:
    """Write every finite metric of :mod:`vaebench.metrics.spec` against the swept setting (one panel per metric, one
    line per (study entry, swept key)), mean and 95% Student-t interval over training seeds, with the published
    values of ``published`` as stars; log x when the values are positive and span 100x or more. None without a sweep
    on one numeric setting."""
    import math

    from vaebench.metrics import spec
    from vaebench.metrics.uncertainty import seed_summary

    lines: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for model, (entry, values) in sweeps.items():
        if len(values) == 1:
            (key, value), = values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                lines.setdefault((entry, key), []).append((float(value), model))
    if not lines:
        return None
    by_model: dict[str, list[dict]] = {}
    for r in records:
        if r.get("dataset") == dataset:
            by_model.setdefault(r["model"], []).append(r)
    keys = [m.key for m in spec.metrics() if not any(w in m.key for w in SWEEP_SKIPPED) and any(
        isinstance(r.get(m.key), (int, float)) and math.isfinite(r[m.key]) for pts in lines.values()
        for _, model in pts for r in by_model.get(model, []))]
    if not keys:
        return None
    plt = _pyplot()
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for (entry, swept), pts in lines.items():
            pts = sorted(pts)
            xs, means, lo, hi = [], [], [], []
            for x, model in pts:
                vals = [r[key] for r in by_model.get(model, []) if isinstance(r.get(key), (int, float))
                        and math.isfinite(r[key])]
                if not vals:
                    continue
                st = seed_summary(vals)
                mean = st["mean"]
                low, high = st.get("ci_low"), st.get("ci_high")
                ok = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
                xs.append(x)
                means.append(mean)
                lo.append(mean - low if ok else 0.0)
                hi.append(high - mean if ok else 0.0)
            if xs:
                (line,) = ax.plot(xs, means, marker="o", label=f"{entry}: {swept}")
                ax.errorbar(xs, means, yerr=[lo, hi], fmt="none", ecolor=line.get_color(), capsize=2)
                for x, model in pts:
                    for p in published:
                        if (p.dataset, p.model, p.metric) == (dataset, model, key):
                            ax.scatter([x], [p.value], marker="*", s=140, color=line.get_color(), edgecolor="black",
                                       zorder=5)
            if xs and min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: metrics against the swept setting (stars: published)")
    return _save(fig, path)
