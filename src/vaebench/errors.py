"""Errors whose message is complete for the user: the CLI prints them without a traceback.

Errors about one damaged or wrong file live beside the code that reads it (``vaebench.data.prepare.
DataIntegrityError``, ``vaebench.data.prepared.PreparedDataError``, ``vaebench.checkpoint.CheckpointError``);
their messages end with :func:`rerun_hint`, which names the job that rewrites the file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path


class StageError(RuntimeError):
    """A stage failed for a reason its message fully states (bad data file, diverging loss, ...)."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``"<ExceptionType>: <first sentence of its message>"``, at most ``limit`` characters of message: the
    underlying cause of a bad-file error, quoted inside a one-line message (without the advice libraries add
    after it, such as torch's suggestion to load untrusted files with ``weights_only=False``)."""
    text = str(exc).strip().splitlines()
    first = text[0].strip().split(". ", 1)[0] if text else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _template_regex(template: str) -> re.Pattern:
    """A regex matching the paths of a stage output template (``{seed}``: digits, other fields: one folder
    or file-name part), anchored at the end and at a folder boundary."""
    parts = re.split(r"\{(\w+)\}", template)
    body = "".join(re.escape(p) if i % 2 == 0 else (rf"(?P<{p}>\d+)" if p == "seed" else rf"(?P<{p}>[^/]+)")
                   for i, p in enumerate(parts))
    return re.compile(rf"(?:^|/){body}$")


def job_of(stage: str, path: str | os.PathLike) -> tuple[str, str] | None:
    """The job of ``stage`` that writes ``path``: ``(Snakemake target, DVC stage name)``, e.g.
    ``("data/prepared/mnist.npz", "prepare@mnist")`` or ``("data/train/mnist/vae/seed0/model.pt",
    "train@mnist-vae-0")``; None when ``path`` is no output of the stage (a file outside the layout of
    ``vaebench.paths``). ``path`` may be relative to the repository root or absolute."""
    from vaebench.dag import STAGES

    spec = STAGES[stage]
    posix = Path(path).as_posix()
    for template in spec.outs.values():
        m = _template_regex(template).search(posix)
        if m:
            values = m.groupdict()
            key = "-".join(values[axis] for axis in spec.over)    # DVC's matrix stage names: name@v1-v2-...
            return template.format(**values), f"{stage}@{key}" if key else stage
    return None


def rerun_hint(stage: str, path: str | os.PathLike) -> str:
    """What to do about a damaged or stale output ``path`` of ``stage``: delete it and rerun the job that writes
    it, with the Snakemake and DVC commands when the path is in the pipeline's layout, e.g.
    ``delete it and rerun its prepare job: `snakemake --force data/prepared/mnist.npz` (Snakemake) or
    `dvc repro -f -s prepare@mnist` (DVC)``."""
    job = job_of(stage, path)
    if job is None:
        return f"delete it and rerun the {stage} stage that writes it"
    target, dvc_name = job
    return (f"delete it and rerun its {stage} job: `snakemake --force {target}` (Snakemake) or "
            f"`dvc repro -f -s {dvc_name}` (DVC)")
