"""Errors whose message is complete for the user (the CLI prints them without a traceback), and the hint that
names the job rewriting a damaged file."""
from __future__ import annotations

import os
import re
from pathlib import Path


class StageError(RuntimeError):
    """A stage failed for a reason its message fully states (bad data file, diverging loss, ...)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``"<ExceptionType>: <first sentence of its message>"``, the message cut to ``limit`` characters."""
    text = str(exc).strip().splitlines()
    first = text[0].strip().split(". ", 1)[0] if text else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _template_regex(template: str) -> re.Pattern:
    """A regex matching the paths of a stage output template, anchored at the end and at a folder boundary."""
    parts = re.split(r"\{(\w+)\}", template)
    body = "".join(re.escape(p) if i % 2 == 0 else (rf"(?P<{p}>\d+)" if p == "seed" else rf"(?P<{p}>[^/]+)")
                   for i, p in enumerate(parts))
    return re.compile(rf"(?:^|/){body}$")


def job_of(stage: str, path: str | os.PathLike) -> tuple[str, str] | None:
    """``(Snakemake target, DVC stage name)`` of the ``stage`` job that writes ``path``, e.g.
    ``("data/studies/smoke/prepared/mnist.npz", "prepare@mnist")``; None when ``path`` is no output of the stage."""
    from vaebench.dag import STAGES

    spec = STAGES[stage]
    posix = Path(path).as_posix()
    for template in spec.outs.values():
        m = _template_regex(template).search(posix)
        if m:
            values = m.groupdict()
            key = "-".join(values[axis] for axis in spec.over)
            return template.format(**values), f"{stage}@{key}" if key else stage
    return None


def rerun_hint(stage: str, path: str | os.PathLike) -> str:
    """Advice for a damaged or stale output ``path`` of ``stage``: delete it and rerun its job (Snakemake, DVC)."""
    job = job_of(stage, path)
    if job is None:
        return f"delete it and rerun the {stage} stage that writes it"
    target, dvc_name = job
    return (f"delete it and rerun its {stage} job: `snakemake --force {target}` (Snakemake; with "
            f"--configfile <its study file>) or `dvc repro -f -s {dvc_name}` (DVC; for a study under studies/, "
            f"`dvc repro -f -s pipelines/<study>/dvc.yaml:{dvc_name}`)")
