"""Training curves as DVC plots data: ``reports/plots/<dataset>/<quantity>.csv``, long format.

Each file holds one quantity per epoch for every model and training seed of a dataset, with the columns
``epoch, model, seed, <quantity>`` (rows in the study's model order, then seed, then epoch; models whose logs
lack the quantity are left out, and a quantity no model logs has no file). ``dvc.yaml`` declares the folder
as the report stage's plots with ``x: epoch`` (the y field is the last column, the quantity) and the template
``.dvc/plots/training_curves.json``, which draws one line per model and seed, coloured by model, so one plot
compares all models; ``dvc plots show`` renders them (offline with the page of :mod:`vaebench.dvc_template`).

Quantities (:data:`QUANTITIES`, from the training log's columns): the validation -ELBO, reconstruction term
and KL term (nats per image, the validation split's mean at the end of each epoch), and where logged the
decoder's log sigma, the effective beta, GECO's lambda and its constraint.
"""
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
    """Write ``out_dir/<dataset>/<quantity>.csv`` (see the module docstring), each file atomically, and
    delete the CSV files of earlier runs that this study no longer has. Returns the files written, sorted.

    ``logs`` maps every (dataset, model, seed) of the grid to its training log (the columns of
    :data:`vaebench.paths.TRAIN_LOG`)."""
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
