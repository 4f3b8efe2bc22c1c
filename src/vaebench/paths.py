"""Every file the pipeline reads or writes, as templates over the grid, relative to the repository root."""
from __future__ import annotations

from pathlib import Path

DEFAULT_STUDY = "params.yaml"          # the default study; DVC always reads this one
CATALOGUE = "catalogue.yaml"           # every model definition, once
CLAIMS = "claims.yaml"                 # the seed papers' claims the report checks
STUDY_SCHEMA = "workflow/schemas/config.schema.yaml"
CATALOGUE_SCHEMA = "workflow/schemas/catalogue.schema.yaml"
DVC_YAML = "dvc.yaml"

STUDIES_DIR = "studies"                # the seed papers' experiments, one study file each
PIPELINES_DIR = "pipelines"            # pipelines/<study>/dvc.yaml: the DVC pipeline of studies/<study>.yaml

# Every output of a study lives under its name ({study}: the study file's `study` key), so studies coexist: running
# one never touches another's files. The shared store holds work that is identical across studies, keyed by content
# (the settings and the code that made it: vaebench.shared).
STUDY_DATA = "data/studies/{study}"
PREPARED = "data/studies/{study}/prepared/{dataset}.npz"
CLASSIFIER = "data/studies/{study}/classifier/{dataset}.pt"
CLASSIFIER_METRICS = "data/studies/{study}/classifier/{dataset}.json"
FID_REFERENCE = "data/studies/{study}/fid/{dataset}/classifier.npz"
FID_INCEPTION_REFERENCE = "data/studies/{study}/fid/{dataset}/inception.npz"
CHECKPOINT = "data/studies/{study}/train/{dataset}/{model}/seed{seed}/model.pt"
RESUME = "data/studies/{study}/train/{dataset}/{model}/seed{seed}/resume.pt"
TRAIN_LOG = "data/studies/{study}/history/{dataset}/{model}/seed{seed}/log.csv"
METRICS = "data/studies/{study}/eval/{dataset}/{model}/seed{seed}/metrics.json"
SAMPLES_PNG = "data/studies/{study}/eval/{dataset}/{model}/seed{seed}/samples.png"
RECON_PNG = "data/studies/{study}/eval/{dataset}/{model}/seed{seed}/recon.png"
# a sequence model's grids: per shown test sequence, these rows of frames 1..T-1, in this order
VIDEO_GRID_ROWS = {"samples_png": ("true frames", "best continuation", "another continuation"),
                   "recon_png": ("true frames", "teacher-forced reconstruction")}
PER_IMAGE = "data/studies/{study}/eval/{dataset}/{model}/seed{seed}/per_image.npz"
SHARED = "data/shared/{kind}/{dataset}-{key}{suffix}"

REPORT_DIR = "reports/{study}"
SUMMARY_CSV = "reports/{study}/summary.csv"
REPORT_METRICS = "reports/{study}/metrics.json"
REPORT_HEADLINE = "reports/{study}/headline.json"   # `dvc metrics show`: the mean of each compared metric
REPORT_HTML = "reports/{study}/index.html"
REPORT_MD = "reports/{study}/index.md"
REPORT_FIGURES = "reports/{study}/figures"
REPORT_CLAIMS = "reports/{study}/claims.csv"
REPORT_PLOTS = "reports/{study}/plots"
SNAKEMAKE_REPORT = "reports/{study}/snakemake.html"
INDEX_HTML = "reports/index.html"      # the reproduction index: every study's status and headline numbers
BENCH_JSON = "reports/bench.json"

CAPTION_SAMPLES = "workflow/report/samples.rst"
CAPTION_RECON = "workflow/report/recon.rst"
CAPTION_CURVES = "workflow/report/curves.rst"
CAPTION_REPORT = "workflow/report/report.rst"
WORKFLOW_DESCRIPTION = "workflow/report/workflow.rst"

def cell_paths(study: str, dataset: str, model: str, seed: int) -> dict[str, Path]:
    """All files of one grid cell (dataset x model x seed) of ``study``, keyed by role."""
    fmt = dict(study=study, dataset=dataset, model=model, seed=seed)
    return {
        "checkpoint": Path(CHECKPOINT.format(**fmt)),
        "resume": Path(RESUME.format(**fmt)),
        "train_log": Path(TRAIN_LOG.format(**fmt)),
        "metrics": Path(METRICS.format(**fmt)),
        "samples_png": Path(SAMPLES_PNG.format(**fmt)),
        "recon_png": Path(RECON_PNG.format(**fmt)),
        "per_image": Path(PER_IMAGE.format(**fmt)),
    }


def pipeline_file(study: str) -> str:
    """The generated DVC pipeline of studies/<study>.yaml."""
    return f"{PIPELINES_DIR}/{study}/dvc.yaml"


def grid_folder(template: str) -> str:
    """The folder of a per-cell template above its first grid placeholder ('data/studies/{study}/eval' for
    METRICS)."""
    head = template.replace("{study}", "\0").split("{", 1)[0].replace("\0", "{study}")
    return head.rstrip("/") if head.endswith("/") else str(Path(head).parent)
