"""The shared store: work that is identical across studies (a prepared dataset, a FID classifier) is done once.

Each study keeps its own output files (``paths.PREPARED``, ``paths.CLASSIFIER``), so the engines see per-study
outputs and studies never touch each other's files; a job whose result is already in the store
(``paths.SHARED``), under the key of its inputs, settings and code, copies that result into place instead of
computing it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from vaebench import paths
from vaebench.atomic import atomic_path
from vaebench.dag import source_paths


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_key(stage: str, payload: dict) -> str:
    """The store key of a ``stage`` job: SHA-256 (first 16 hex digits) over ``payload`` (its settings and input
    digests, canonical JSON) and the bytes of the stage's source files (:func:`vaebench.dag.source_paths`; the
    stages that share, prepare and classifier, run no model component), so a change of code or settings never
    reuses a stored result."""
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for f in source_paths(stage, used={}):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically, with a new modification time: a hard link would share one time between
    studies, and touching it for one study would make another's later outputs look older than their inputs."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def reuse_or_build(kind: str, dataset: str, key: str | None, outputs: dict[str, Path],
                   build: Callable[[], object]) -> bool:
    """Fill ``outputs`` ({suffix: path}) from the store entry ``kind``/``dataset``-``key``, or run ``build`` (which
    writes every output, atomically) and add its outputs to the store. ``key`` None: never shared (``build``
    only). Returns True when the stored result was reused."""
    if key is None:
        build()
        return False
    stored = {sfx: Path(paths.SHARED.format(kind=kind, dataset=dataset, key=key, suffix=sfx)) for sfx in outputs}
    if all(p.is_file() for p in stored.values()):
        for sfx, out in outputs.items():
            _copy(stored[sfx], Path(out))
            print(f"[shared] {kind} {dataset}: {out} copied from {stored[sfx]}", file=sys.stderr, flush=True)
        return True
    build()
    for sfx, out in outputs.items():
        _copy(Path(out), stored[sfx])
    return False
