"""Training curves as DVC plots data: reports/plots/<dataset>/<quantity>.csv, columns epoch, model, seed,
<quantity>."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from vaebench.atomic import atomic_path
from vaebench.metrics import spec

VALIDATION_QUANTITIES: dict[str, tuple[str, float]] = {
    "val_neg_elbo": ("val_elbo", -1.0), "val_recon": ("val_recon", 1.0), "val_kl": ("val_kl", 1.0)}


def quantities() -> dict[str, tuple[str, float]]:
    """{file and column name: (training-log column, factor)}: the validation terms and every tracked scalar."""
    return VALIDATION_QUANTITIES | {s.name: (s.name, 1.0) for s in spec.TRACKED.values()}


def plot_frames(datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                logs: Mapping[tuple[str, str, int], pd.DataFrame]) -> dict[tuple[str, str], pd.DataFrame]:
    """{(dataset, quantity): long frame with columns epoch, model, seed, quantity} for every quantity some
    cell of the dataset logs; rows with a missing value are dropped."""
    frames = {}
    for d in datasets:
        for name, (column, factor) in quantities().items():
            parts = []
            for m in models:
                for s in seeds:
                    log = logs[(d, m, s)]
                    if column not in log.columns:
                        continue
                    part = pd.DataFrame({"epoch": log["epoch"].astype(int), "model": m, "seed": int(s),
                                         name: log[column].astype(float) * factor}).dropna(subset=[name])
                    parts.append(part)
            if parts and any(len(p) for p in parts):
                frames[(d, name)] = pd.concat(parts, ignore_index=True)
    return frames


def write_plot_data(out_dir: str | Path, datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                    logs: Mapping[tuple[str, str, int], pd.DataFrame]) -> list[Path]:
    """Write ``out_dir/<dataset>/<quantity>.csv`` (rows: docs/report.md), each file atomically, and delete the CSV
    files of earlier runs that this study no longer has."""
    out_dir = Path(out_dir)
    written = []
    for (d, name), frame in plot_frames(datasets, models, seeds, logs).items():
        path = out_dir / d / f"{name}.csv"
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        written.append(path)
    for stale in set(out_dir.glob("*/*.csv")) - set(written):
        stale.unlink()
    return sorted(written)
