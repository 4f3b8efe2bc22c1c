# Shared helpers: load and validate the study, name every file through vaebench.paths.
import glob
import sys

from vaebench import paths
from vaebench.config import cells, validate_params

# A study given with --configfile replaces params.yaml instead of being deep-merged into it.
if not workflow.overwrite_configfiles:

    configfile: "params.yaml"


STUDY_FILE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"
# Validate before any job runs: a bad key stops the whole workflow with a message naming it.
STUDY = validate_params(dict(config), source=STUDY_FILE)
CELLS = cells(STUDY)
# The interpreter running Snakemake has vaebench installed (works without activating the venv).
VAEBENCH = f"{sys.executable} -m vaebench"
wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_]+",
    seed="[0-9]+",


def sources(stage):
    """Source files a stage runs (directories expanded, so editing any file reruns the stage)."""
    files = []
    for p in paths.STAGE_SOURCES[stage]:
        files += sorted(glob.glob(f"{p}/*.py")) if not p.endswith(".py") else [p]
    return files




REPORT_OUTPUTS = [paths.SUMMARY_CSV, paths.REPORT_METRICS, paths.REPORT_HTML, paths.REPORT_MD]


onstart:
    # create the MLflow store and experiment once, before parallel jobs race on them
    shell(f"{VAEBENCH} mlflow-init --params {STUDY_FILE}")
