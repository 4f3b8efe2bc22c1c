"""MLflow tracking that can never lose a result.

Files in ``data/`` and ``reports/`` are the source of truth; MLflow is a browsable mirror of them.
Every MLflow call goes through :class:`Tracker`, which catches any failure (unreachable server,
locked database, bad URI), warns once naming the tracking URI, and turns itself off so the job still
finishes and writes its files.

Store: MLflow's own default (``sqlite:///mlflow.db`` in the working directory, artifacts under
``./mlruns``); ``MLFLOW_TRACKING_URI`` overrides it. One experiment per study, one run per cell.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)

# A pipeline job must not hang for minutes retrying an unreachable server: MLflow's defaults retry an
# HTTP request 7 times with backoff. Users can still override these in their environment.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


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


class Tracker:
    """A fault-tolerant handle on one MLflow run.

    Args:
        experiment: experiment name (the study name).
        enabled: False skips MLflow entirely (e.g. ``VAEBENCH_MLFLOW=0``).
    """

    def __init__(self, experiment: str, enabled: bool | None = None):
        if enabled is None:
            enabled = os.environ.get("VAEBENCH_MLFLOW", "1") not in ("0", "false", "no")
        self.experiment = experiment
        self.enabled = enabled
        self.run_id: str | None = None
        self._client = None
        self._uri = None

    # -- internals -------------------------------------------------------------------------------
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
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self._client.create_experiment(self.experiment)
        except Exception:
            # another process created it between our lookup and our create
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    # -- public API ------------------------------------------------------------------------------
    def ensure_experiment(self) -> str | None:
        """Create the store and the study's experiment (run once before parallel jobs start)."""
        return self._call("creating the experiment", self._experiment_id)

    def start_run(self, run_name: str, tags: dict[str, str], params: dict) -> str | None:
        """Create a new run tagged with ``tags`` and log ``params`` (flattened); returns its id."""

        def _start():
            run = self._client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(flat), 100):
                self._client.log_batch(self.run_id, params=flat[i : i + 100])
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

    def log_metrics(self, metrics: dict[str, float | None], step: int | None = None) -> None:
        """Log finite numeric metrics (None and non-numbers are skipped)."""

        def _log():
            from mlflow.entities import Metric
            import time

            ts = int(time.time() * 1000)
            ms = [
                Metric(k, float(v), ts, step or 0)
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            ]
            if ms:
                self._client.log_batch(self.run_id, metrics=ms)

        if self.run_id is not None:
            self._call("logging metrics", _log)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifact store."""
        if self.run_id is not None:
            self._call("logging an artifact", self._client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        if self.run_id is not None:
            self._call("setting a tag", self._client.set_tag, self.run_id, key, value)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED or FAILED."""
        if self.run_id is not None:
            self._call("ending the run", self._client.set_terminated, self.run_id, status)
