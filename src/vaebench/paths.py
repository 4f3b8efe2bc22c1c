"""Every file the pipeline reads or writes, as templates over the grid, relative to the repository root."""
from __future__ import annotations

from pathlib import Path

DEFAULT_STUDY = "params.yaml"          # the default study; DVC always reads this one
CATALOGUE = "catalogue.yaml"           # every model definition, once
CLAIMS = "claims.yaml"                 # the seed papers' claims the report checks
STUDY_SCHEMA = "workflow/schemas/config.schema.yaml"
CATALOGUE_SCHEMA = "workflow/schemas/catalogue.schema.yaml"
DVC_YAML = "dvc.yaml"

PREPARED = "data/prepared/{dataset}.npz"
CLASSIFIER = "data/classifier/{dataset}.pt"
CLASSIFIER_METRICS = "data/classifier/{dataset}.json"
FID_REFERENCE = "data/fid/{dataset}/classifier.npz"
FID_INCEPTION_REFERENCE = "data/fid/{dataset}/inception.npz"
CHECKPOINT = "data/train/{dataset}/{model}/seed{seed}/model.pt"
RESUME = "data/train/{dataset}/{model}/seed{seed}/resume.pt"
TRAIN_LOG = "data/history/{dataset}/{model}/seed{seed}/log.csv"
METRICS = "data/eval/{dataset}/{model}/seed{seed}/metrics.json"
SAMPLES_PNG = "data/eval/{dataset}/{model}/seed{seed}/samples.png"
RECON_PNG = "data/eval/{dataset}/{model}/seed{seed}/recon.png"
PER_IMAGE = "data/eval/{dataset}/{model}/seed{seed}/per_image.npz"

REPORT_DIR = "reports"
SUMMARY_CSV = "reports/summary.csv"
REPORT_METRICS = "reports/metrics.json"
REPORT_HTML = "reports/index.html"
REPORT_MD = "reports/index.md"
REPORT_FIGURES = "reports/figures"
REPORT_CLAIMS = "reports/claims.csv"
REPORT_PLOTS = "reports/plots"
BENCH_JSON = "reports/bench.json"

CAPTION_SAMPLES = "workflow/report/samples.rst"
CAPTION_RECON = "workflow/report/recon.rst"
CAPTION_CURVES = "workflow/report/curves.rst"
CAPTION_REPORT = "workflow/report/report.rst"
WORKFLOW_DESCRIPTION = "workflow/report/workflow.rst"

def cell_paths(dataset: str, model: str, seed: int) -> dict[str, Path]:
    """All files of one grid cell (dataset x model x seed), keyed by role."""
    fmt = dict(dataset=dataset, model=model, seed=seed)
    return {
        "checkpoint": Path(CHECKPOINT.format(**fmt)),
        "resume": Path(RESUME.format(**fmt)),
        "train_log": Path(TRAIN_LOG.format(**fmt)),
        "metrics": Path(METRICS.format(**fmt)),
        "samples_png": Path(SAMPLES_PNG.format(**fmt)),
        "recon_png": Path(RECON_PNG.format(**fmt)),
        "per_image": Path(PER_IMAGE.format(**fmt)),
    }


def grid_folder(template: str) -> str:
    """The folder of a per-cell template above its first placeholder ('data/eval' for METRICS)."""
    head = template.split("{", 1)[0]
    return head.rstrip("/") if head.endswith("/") else str(Path(head).parent)
