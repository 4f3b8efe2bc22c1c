"""The one source of truth for every file the pipeline reads or writes.

Snakemake (``workflow/rules/common.smk``) formats these templates to name its outputs, the Python CLI
uses them to find its inputs, and ``dvc.yaml`` spells the same paths with ``${item.*}``; the test
``tests/test_dag_consistency.py`` proves that both engines name the same files for the same params.
All paths are relative to the repository root (the working directory of every stage).
"""
from __future__ import annotations

from pathlib import Path

PREPARED = "data/prepared/{dataset}.npz"
CLASSIFIER = "data/classifier/{dataset}.pt"
CLASSIFIER_METRICS = "data/classifier/{dataset}.json"
CHECKPOINT = "data/train/{dataset}/{model}/seed{seed}/model.pt"
TRAIN_LOG = "data/train/{dataset}/{model}/seed{seed}/log.csv"
METRICS = "data/eval/{dataset}/{model}/seed{seed}/metrics.json"
SAMPLES_PNG = "data/eval/{dataset}/{model}/seed{seed}/samples.png"
RECON_PNG = "data/eval/{dataset}/{model}/seed{seed}/recon.png"

REPORT_DIR = "reports"
SUMMARY_CSV = "reports/summary.csv"
REPORT_METRICS = "reports/metrics.json"
REPORT_HTML = "reports/index.html"
REPORT_MD = "reports/index.md"
REPORT_FIGURES = "reports/figures"

# Source files each stage runs: declared as inputs (Snakemake) and deps (DVC) so that editing the
# code of a stage reruns that stage and nothing else.
STAGE_SOURCES = {
    "prepare": ["src/vaebench/data.py"],
    "classifier": ["src/vaebench/classifier.py"],
    "train": ["src/vaebench/train.py", "src/vaebench/vae"],
    "evaluate": ["src/vaebench/evaluate.py", "src/vaebench/fid.py", "src/vaebench/vae"],
    "report": ["src/vaebench/report.py", "src/vaebench/published.py"],
}


def cell_paths(dataset: str, model: str, seed: int) -> dict[str, Path]:
    """All files of one grid cell (dataset x model x seed), keyed by role."""
    fmt = dict(dataset=dataset, model=model, seed=seed)
    return {
        "checkpoint": Path(CHECKPOINT.format(**fmt)),
        "train_log": Path(TRAIN_LOG.format(**fmt)),
        "metrics": Path(METRICS.format(**fmt)),
        "samples_png": Path(SAMPLES_PNG.format(**fmt)),
        "recon_png": Path(RECON_PNG.format(**fmt)),
    }
