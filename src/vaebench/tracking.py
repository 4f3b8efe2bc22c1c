"""MLflow tracking that never loses a result: every call goes through Tracker, which warns and turns itself off
on any failure (files in data/ and reports/ are the source of truth)."""
from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# retries, timeout, experiment kind, digest size, grids, the dataset race: docs/report.md
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

DATASET_DIGEST_CHARS = 36
DATASET_SHA256_TAG = "dataset_sha256"      # run tag: the full SHA-256 of the run's prepared dataset file

GRID_N = 64
SUPERSEDED_TAG = "vaebench.superseded_by"  # on a retrained cell's earlier run: the id of the run replacing it
GRID_MIN_WIDTH = 512  # pixels: MLflow image grids are enlarged to at least this width

CURVES, GRIDS, RESULTS = "curves", "grids", "results"
"""Key prefixes of what a run logs: per-epoch curves, image grids, final results. The MLflow UI draws one chart
section per prefix, in the order of the keys, so a run's "Model metrics" tab opens on its curves."""


def metric_key(section: str, name: str) -> str:
    """The MLflow key of quantity ``name`` in ``section`` (:data:`CURVES`, :data:`GRIDS` or :data:`RESULTS`).

    Raises:
        ValueError: ``section`` is not one of them.
    """
    if section not in (CURVES, GRIDS, RESULTS):
        raise ValueError(f"unknown MLflow section {section!r} (known: {CURVES}, {GRIDS}, {RESULTS})")
    return f"{section}/{name}"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read ``chunk_bytes`` at a time.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()


def grid_n() -> int:
    """Images per per-epoch grid: ``$VAEBENCH_MLFLOW_GRID_N`` if set, else :data:`GRID_N` (0 = no grids).
    A value that is not a non-negative integer warns and gives :data:`GRID_N` (tracking never stops a job)."""
    raw = os.environ.get("VAEBENCH_MLFLOW_GRID_N", "").strip()
    if not raw:
        return GRID_N
    if not raw.isdigit():
        warnings.warn(f"VAEBENCH_MLFLOW_GRID_N={raw!r} is not a non-negative integer; using {GRID_N}",
                      RuntimeWarning, stacklevel=2)
        return GRID_N
    return int(raw)


def _grid_to_pil(grid: torch.Tensor, min_width: int = GRID_MIN_WIDTH):
    """A (3, H, W) float grid in [0, 1] (:func:`vaebench.grids.grid_image`) -> a PIL image, rounded exactly as the
    evaluate stage writes its PNGs (:func:`vaebench.grids.grid_pixels`), then enlarged by a whole factor (nearest
    neighbour, pixels stay sharp) to at least ``min_width`` pixels wide, so that the MLflow image card shows 28 x 28
    digits at a readable size."""
    from PIL import Image

    from vaebench.grids import grid_pixels

    img = Image.fromarray(grid_pixels(grid.detach().float()))
    factor = max(1, math.ceil(min_width / img.width))
    return img if factor == 1 else img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


class Tracker:
    """A fault-tolerant handle on one MLflow run."""

    def __init__(self, experiment: str, enabled: bool | None = None):
        if enabled is None:
            enabled = os.environ.get("VAEBENCH_MLFLOW", "1") not in ("0", "false", "no")
        self.experiment = experiment
        self.enabled = enabled
        self.run_id: str | None = None
        self._client = None
        self._uri = None

    def _fail(self, what: str, exc: BaseException) -> None:
        warnings.warn(
            f"MLflow unavailable ({what} failed against tracking URI {self._uri!r}: "
            f"{type(exc).__name__}: {exc}). Continuing without tracking; results are in data/ and reports/.",
            RuntimeWarning,
            stacklevel=3,
        )
        self.enabled = False

    def _call(self, what: str, fn, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            if self._client is None:
                import mlflow  # lazy: ~2 s import
                from mlflow.tracking import MlflowClient

                self._uri = mlflow.get_tracking_uri()
                self._client = MlflowClient(self._uri)
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - by design: tracking never breaks a job
            self._fail(what, exc)
            return None

    def _experiment_id(self) -> str:
        """The study's experiment, created with the experiment kind tag if missing; an existing experiment
        without the tag gets it (one whose kind a user chose is left alone)."""
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is not None and exp.lifecycle_stage == "deleted":     # dropped by :meth:`drop_if_empty`
            self._client.restore_experiment(exp.experiment_id)
        if exp is None:
            try:
                return self._client.create_experiment(self.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                # another process created it between our lookup and our create
                exp = self._client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self._client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id

    # -- public API ------------------------------------------------------------------------------
    @property
    def uri(self) -> str | None:
        """The tracking URI in use (None before the first call or with tracking off)."""
        return self._uri

    @property
    def active(self) -> bool:
        """True while there is a run to log to (enabled, run started or resumed, no failure yet)."""
        return self.enabled and self.run_id is not None

    def ensure_experiment(self) -> str | None:
        """Create the store and the study's experiment (run once before parallel jobs start), marked as a
        model-training experiment (:data:`EXPERIMENT_KIND_TAG` = :data:`EXPERIMENT_KIND`); an existing
        experiment lacking that tag gets it. Returns the experiment id (None when tracking is off)."""
        return self._call("creating the experiment", self._experiment_id)

    def drop_if_empty(self) -> bool:
        """Delete the study's experiment (MLflow's soft delete; :meth:`ensure_experiment` restores it) when it holds
        no run, so that a study failing before training leaves no empty experiment. Returns whether it did."""

        def _drop():
            from mlflow.entities import ViewType

            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None or exp.lifecycle_stage == "deleted":
                return False
            if self._client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1):
                return False
            self._client.delete_experiment(exp.experiment_id)
            return True

        return bool(self._call("dropping the empty experiment", _drop))

    def start_run(self, run_name: str, tags: dict[str, str], params: dict, supersede: tuple[str, ...] = ()) -> str | None:
        """Create a new run tagged with ``tags`` and log ``params`` (flattened); returns its id. Earlier runs of the
        experiment with the same values of the ``supersede`` tags (a retrained cell: dataset, model, seed) are
        marked, not deleted: tag :data:`SUPERSEDED_TAG` = the new run's id and " (replaced)" after their name."""

        def _start():
            old = []
            if supersede:
                query = " and ".join(f"tags.{k} = '{tags[k]}'" for k in supersede)
                old = [r for r in self._client.search_runs([self._experiment_id()], filter_string=query,
                                                           max_results=1000)
                       if SUPERSEDED_TAG not in r.data.tags]
            run = self._client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(flat), 100):
                self._client.log_batch(self.run_id, params=flat[i : i + 100])
            for r in old:
                self._client.set_tag(r.info.run_id, SUPERSEDED_TAG, self.run_id)
                self._client.update_run(r.info.run_id, name=f"{r.info.run_name} (replaced)")
            return self.run_id

        return self._call("starting a run", _start)

    def resume_run(self, run_id: str | None) -> None:
        """Attach to an existing run (evaluation logs to the training run of its cell)."""
        if run_id is None:
            self.enabled = False
            warnings.warn("no MLflow run id recorded for this cell; evaluation metrics are not tracked", RuntimeWarning, stacklevel=2)
            return

        def _resume():
            self._client.get_run(run_id)  # raises if the run (or store) is gone
            self.run_id = run_id

        self._call("resuming the run", _resume)

    def continue_run(self, run_id: str | None, step_key: str) -> int | None:
        """Reopen the training run of a resumed job: mark run ``run_id`` RUNNING again and return the last step at
        which curve ``step_key`` (a :data:`CURVES` metric) was logged (0 when never), so that the caller logs only the epochs after it (a
        job killed between logging an epoch and saving its resume file logs no epoch twice)."""
        if run_id is None or not self.enabled:
            return None

        def _continue():
            try:
                self._client.get_run(run_id)
            except Exception:  # noqa: BLE001 - deleted run or another store: the caller starts a new run
                return None
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            history = self._client.get_metric_history(run_id, metric_key(CURVES, step_key))
            return max((m.step for m in history), default=0)

        return self._call("reopening the run", _continue)

    def log_metrics(self, metrics: dict[str, float | None], section: str, step: int | None = None) -> None:
        """Log finite numeric metrics under keys ``<section>/<name>`` (:func:`metric_key`; None and non-numbers are
        skipped)."""

        def _log():
            from mlflow.entities import Metric
            import time

            ts = int(time.time() * 1000)
            ms = [
                Metric(metric_key(section, k), float(v), ts, step or 0)
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            ]
            if ms:
                self._client.log_batch(self.run_id, metrics=ms)

        if self.run_id is not None:
            self._call("logging metrics", _log)

    def log_record(self, record: dict, step: int | None = None) -> None:
        """Log an evaluate record: its measured quantities as :data:`RESULTS` metrics
        (:func:`vaebench.metrics.spec.mlflow_keys`) and its evaluation settings (``iwae_k``, ``fid_n``, ...) as tags ``eval.<key>`` (a setting is not a
        quantity to chart, and a tag may change when the cell is evaluated again)."""
        from vaebench.metrics import spec

        self.log_metrics({k: record[k] for k in spec.mlflow_keys() if k in record
                          and isinstance(record[k], (int, float)) and not isinstance(record[k], bool)},
                         RESULTS, step=step)

        def _tags():
            from mlflow.entities import RunTag

            tags = [RunTag(f"eval.{k}", str(record[k])) for k in sorted(spec.setting_keys()) if k in record]
            if tags:
                self._client.log_batch(self.run_id, tags=tags)

        if self.run_id is not None:
            self._call("logging the evaluation settings", _tags)

    def log_dataset(self, name: str, path: str | os.PathLike, context: str = "training") -> None:
        """Log a prepared dataset file as the run's MLflow dataset input."""

        def _log():
            import json

            from mlflow.data.dataset_source_registry import get_dataset_source_from_json
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import Dataset, DatasetInput, InputTag
            from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

            sha = file_sha256(path)
            source = get_dataset_source_from_json(json.dumps({"uri": str(path)}), source_type="local")
            meta = MetaDataset(source, name=name, digest=sha[:DATASET_DIGEST_CHARS]).to_dict()
            entity = Dataset(name=meta["name"], digest=meta["digest"], source_type=meta["source_type"],
                             source=meta["source"])
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("sha256", sha)]
            inputs = [DatasetInput(entity, tags)]
            try:
                self._client.log_inputs(self.run_id, datasets=inputs)
            except Exception as exc:  # noqa: BLE001 - only the race below is retried
                if "UNIQUE constraint failed: datasets" not in str(exc):
                    raise
                self._client.log_inputs(self.run_id, datasets=inputs)
            self._client.set_tag(self.run_id, DATASET_SHA256_TAG, sha)

        if self.run_id is not None:
            self._call("logging the dataset input", _log)

    def log_images(self, grids: Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]],
                   step: int) -> None:
        """Log image grids as MLflow images ``grids/<key>`` at ``step`` (the UI shows them per key with a step slider;
        the files are ``images/grids~<key>+step+<step>+...png`` among the run's artifacts)."""

        def _log():
            for key, grid in (grids() if callable(grids) else grids).items():
                self._client.log_image(self.run_id, _grid_to_pil(grid), key=metric_key(GRIDS, key), step=int(step))

        if self.run_id is not None:
            self._call("logging images", _log)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifact store."""
        if self.run_id is not None:
            self._call("logging an artifact", self._client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        """Set a run tag."""
        if self.run_id is not None:
            self._call("setting a tag", self._client.set_tag, self.run_id, key, value)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED or FAILED."""
        if self.run_id is not None:
            self._call("ending the run", self._client.set_terminated, self.run_id, status)
