"""Every kind of stage output is written atomically: a writer that fails halfway leaves the previous file.

For each kind of output (npz, checkpoint, CSV, JSON, PNG, the HTML report) a test calls the REAL production
function that writes it (or ``atomic_path`` exactly as the stage uses it, when there is no dedicated function)
while the library call underneath (``numpy.savez``, ``torch.save``, ``DataFrame.to_csv``, ``Path.write_text``,
``Figure.savefig``, ``PIL.Image.Image.save``) is replaced by a writer that renders the real bytes, writes the
first half of them to the file it was given and then raises :class:`Halfway`. Each test then checks that

1. the exception reaches the caller,
2. the earlier version of the destination (written by the same production function) is byte-for-byte unchanged,
3. the folder lists exactly the same names as before (no partial or temporary file is left behind),
4. the failing writer really ran and really wrote bytes (so that the test cannot pass vacuously).

Each scenario is a function returning the list of violated properties (empty: atomic), so that
``test_the_checks_detect_a_non_atomic_writer`` can run the same checks with ``atomic_path`` replaced by an
in-place writer (and by one that leaks its temporary file) and show that they fail.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch

import vaebench.atomic
from vaebench import paths

STUDY = "atomic"   # the study whose output paths the scenarios write (every output lives under its study's name)


class Halfway(Exception):
    """Raised by the fake writers after they wrote part of the file."""


def _write_half(target, data: bytes, wrote: list) -> None:
    """Write the first half of ``data`` to ``target`` (a path or a binary file object), record it, raise."""
    half = data[: max(1, len(data) // 2)]
    if hasattr(target, "write"):
        target.write(half)
        target.flush()
        name = target.name
    else:
        with open(target, "wb") as f:
            f.write(half)
        name = os.fspath(target)
    wrote.append((Path(name), os.path.getsize(name)))
    raise Halfway(f"writer interrupted after {len(half)} of {len(data)} bytes of {name}")


def _halfway(real, wrote: list):
    """A stand-in for ``real(file, *args, **kwargs)`` (``np.savez`` and the like, the file first) that renders
    the real bytes in memory and writes half of them to ``file`` before raising (:func:`_write_half`)."""

    def fake(file, *args, **kwargs):
        buf = io.BytesIO()
        real(buf, *args, **kwargs)
        _write_half(file, buf.getvalue(), wrote)

    return fake


def _interrupted(dest: Path, rewrite: Callable[[], None], wrote: list) -> list[str]:
    """Run ``rewrite`` (which must fail halfway through writing ``dest``) and return what went wrong."""
    dest = Path(dest)
    folder = dest.parent
    old = dest.read_bytes()
    listing = sorted(os.listdir(folder))
    problems = []
    try:
        rewrite()
    except Halfway:
        pass
    else:
        problems.append("the writer's exception did not propagate")
    if not wrote or wrote[0][1] == 0:
        problems.append("the failing writer never wrote anything (the test patched the wrong call)")
    if not dest.is_file() or dest.read_bytes() != old:
        problems.append(f"the earlier {dest.name} was changed")
    after = sorted(os.listdir(folder))
    if after != listing:
        problems.append(f"the folder changed: {listing} -> {after}")
    return problems


# ------------------------------------------------------------------------------------------------
# One scenario per kind of output: write an earlier version with the production function, then fail halfway.

def npz_prepared(tmp_path: Path, monkeypatch) -> list[str]:
    """npz: ``vaebench.data.prepare_dataset`` writing ``data/studies/<study>/prepared/mnist.npz`` (``np.savez``)."""
    from vaebench.data import SOURCES, idx, prepare

    (tmp_path / "mirror" / "mnist").mkdir(parents=True)   # resolve_source runs for real and finds the folder
    for name in SOURCES["mnist"].files.values():   # and the files (read by the stand-in below)
        (tmp_path / "mirror" / "mnist" / name).touch()

    def fake_idx(seed):  # stands in for the checksum-verified reader of the real MNIST files
        rng = np.random.RandomState(seed)
        arrays = {"train_images": rng.randint(0, 256, (30, 28, 28), dtype=np.uint8),
                  "train_labels": rng.randint(0, 10, 30).astype(np.uint8),
                  "test_images": rng.randint(0, 256, (10, 28, 28), dtype=np.uint8),
                  "test_labels": rng.randint(0, 10, 10).astype(np.uint8)}
        return lambda name, folder: (arrays, {"stub": f"seed{seed}"})

    dest = tmp_path / paths.PREPARED.format(study=STUDY, dataset="mnist")

    def run():
        prepare.prepare_dataset("mnist", {"n_validation": 5}, dest, mirror=tmp_path / "mirror")

    monkeypatch.setattr(idx, "read_idx_files", fake_idx(0))
    run()                                                       # the earlier, complete version
    assert np.load(dest)["x_train"].shape == (25, 1, 28, 28)

    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(idx, "read_idx_files", fake_idx(1))
        mp.setattr(np, "savez", _halfway(np.savez, wrote))
        return _interrupted(dest, run, wrote)


def npz_per_image(tmp_path: Path, monkeypatch) -> list[str]:
    """npz: the evaluate stage's per_image.npz (``np.savez_compressed`` through ``atomic_path``)."""
    from vaebench.stages import evaluate

    monkeypatch.chdir(tmp_path)
    out = paths.cell_paths(STUDY, "mnist", "vae_bernoulli", 0)

    def run(arrays):
        # src/vaebench/stages/evaluate.py, run():
        #     with atomic_path(out["per_image"]) as tmp, open(tmp, "wb") as f:
        #         np.savez_compressed(f, **arrays)
        with evaluate.atomic_path(out["per_image"]) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    run({"index": np.arange(5), "elbo": np.linspace(-1, 0, 5)})
    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(np, "savez_compressed", _halfway(np.savez_compressed, wrote))
        return _interrupted(tmp_path / out["per_image"],
                            lambda: run({"index": np.arange(50), "elbo": np.linspace(-2, 0, 50)}), wrote)


def checkpoint(tmp_path: Path, monkeypatch) -> list[str]:
    """checkpoint: ``vaebench.checkpoint.save_checkpoint`` (``torch.save``)."""
    from vaebench.checkpoint import save_checkpoint

    dest = tmp_path / paths.CHECKPOINT.format(study=STUDY, dataset="mnist", model="vae_bernoulli", seed=0)
    torch.manual_seed(0)
    save_checkpoint(dest, torch.nn.Linear(4, 3), {"epochs": 1, "history": [{"epoch": 1}]})
    assert torch.load(dest, weights_only=True)["epochs"] == 1

    wrote = []
    real = torch.save

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        _write_half(f, buf.getvalue(), wrote)

    with monkeypatch.context() as mp:
        mp.setattr(torch, "save", save)
        return _interrupted(dest, lambda: save_checkpoint(dest, torch.nn.Linear(4, 3), {"epochs": 2}), wrote)


def _failing_to_csv(wrote: list):
    real = pd.DataFrame.to_csv

    def to_csv(self, path_or_buf=None, *args, **kwargs):
        _write_half(path_or_buf, real(self, None, *args, **kwargs).encode(), wrote)

    return to_csv


def csv_train_log(tmp_path: Path, monkeypatch) -> list[str]:
    """CSV: the train stage's per-epoch log (``DataFrame.to_csv`` through ``atomic_path``)."""
    from vaebench.stages import train

    monkeypatch.chdir(tmp_path)
    out = paths.cell_paths(STUDY, "mnist", "vae_bernoulli", 0)

    def run(history):
        # src/vaebench/stages/train.py, train_cell():
        #     with atomic_path(out["train_log"]) as tmp:
        #         pd.DataFrame(history).to_csv(tmp, index=False)
        with train.atomic_path(out["train_log"]) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)

    run([{"epoch": 1, "train_loss": 120.0}])
    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(pd.DataFrame, "to_csv", _failing_to_csv(wrote))
        return _interrupted(tmp_path / out["train_log"],
                            lambda: run([{"epoch": e, "train_loss": 100.0 + e} for e in range(1, 40)]), wrote)


def csv_claims(tmp_path: Path, monkeypatch) -> list[str]:
    """CSV: the report's ``vaebench.report.claims.write_claims_csv`` (``DataFrame.to_csv``)."""
    from vaebench.report.claims import COLUMNS, write_claims_csv

    dest = tmp_path / paths.REPORT_CLAIMS.format(study=STUDY)
    row = lambda i: {c: f"{c}-{i}" for c in COLUMNS}  # noqa: E731
    write_claims_csv([row(0)], dest)
    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(pd.DataFrame, "to_csv", _failing_to_csv(wrote))
        return _interrupted(dest, lambda: write_claims_csv([row(i) for i in range(20)], dest), wrote)


def _failing_write_text(wrote: list, only_suffix: str = ""):
    """``Path.write_text`` that writes half of the encoded text and raises (for files ending ``only_suffix``;
    every other file is written normally)."""
    real = Path.write_text

    def write_text(self, data, encoding=None, errors=None, newline=None):
        if not self.name.endswith(only_suffix):
            return real(self, data, encoding=encoding, errors=errors, newline=newline)
        _write_half(self, data.encode(encoding or "utf-8"), wrote)

    return write_text


def json_metrics(tmp_path: Path, monkeypatch) -> list[str]:
    """JSON: ``vaebench.atomic.write_json`` writing metrics.json (its file write, ``Path.write_text``)."""
    from vaebench.atomic import write_json

    dest = tmp_path / paths.METRICS.format(study=STUDY, dataset="mnist", model="vae_bernoulli", seed=0)
    write_json(dest, {"test_elbo_nats": -100.0, "seed": 0})
    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(Path, "write_text", _failing_write_text(wrote))
        return _interrupted(dest, lambda: write_json(dest, {"test_elbo_nats": -90.0, "seed": 0,
                                                            "history": list(range(100))}), wrote)


def png_figure(tmp_path: Path, monkeypatch) -> list[str]:
    """PNG: the report's figures, ``vaebench.report.figures._save`` (matplotlib ``Figure.savefig`` to memory, then
    ``PIL.Image.Image.save`` to the file); every figure of ``write_figures`` is written by it."""
    from PIL import Image

    from vaebench.report import figures

    plt = figures._pyplot()
    dest = tmp_path / paths.REPORT_FIGURES.format(study=STUDY) / "mnist_validation_curves.png"

    def run(values):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot(values)
        figures._save(fig, dest)

    run([1, 2, 3])
    wrote = []
    real = Image.Image.save

    def save(self, fp, format=None, **params):      # the file's writer; matplotlib renders to memory through it first
        if isinstance(fp, io.BytesIO):
            return real(self, fp, format=format, **params)
        buf = io.BytesIO()
        real(self, buf, format="PNG", **params)
        _write_half(fp, buf.getvalue(), wrote)

    with monkeypatch.context() as mp:
        mp.setattr(Image.Image, "save", save)
        problems = _interrupted(dest, lambda: run([3, 1, 2, 5]), wrote)
    plt.close("all")
    return problems


def png_samples(tmp_path: Path, monkeypatch) -> list[str]:
    """PNG: the evaluate stage's samples.png (torchvision ``save_image``, i.e. ``PIL.Image.Image.save``, through
    ``atomic_path``)."""
    from PIL import Image
    from torchvision.utils import make_grid, save_image

    from vaebench.stages import evaluate

    monkeypatch.chdir(tmp_path)
    out = paths.cell_paths(STUDY, "mnist", "vae_bernoulli", 0)

    def run(first_samples, nrow):
        # src/vaebench/stages/evaluate.py, run():
        #     with atomic_path(out["samples_png"]) as tmp:
        #         save_image(make_grid(first_samples[:n_grid].float().cpu(), nrow=nrow, padding=2), tmp)
        with evaluate.atomic_path(out["samples_png"]) as tmp:
            save_image(make_grid(first_samples.float().cpu(), nrow=nrow, padding=2), tmp)

    gen = torch.Generator().manual_seed(0)
    run(torch.rand(4, 1, 8, 8, generator=gen), 2)
    wrote = []
    real = Image.Image.save

    def save(self, fp, format=None, **params):
        buf = io.BytesIO()
        real(self, buf, format="PNG", **params)
        _write_half(fp, buf.getvalue(), wrote)

    with monkeypatch.context() as mp:
        mp.setattr(Image.Image, "save", save)
        return _interrupted(tmp_path / out["samples_png"], lambda: run(torch.rand(16, 1, 8, 8, generator=gen), 4),
                            wrote)


def report_html(tmp_path: Path, monkeypatch) -> list[str]:
    """The report: ``vaebench.report.build_report`` writing reports/<study>/index.html (Jinja2-rendered) with
    ``vaebench.atomic.write_text``, on the fake one-cell study of test_report.py."""
    import test_report as fake   # tests/ is on sys.path (pytest's rootdir conftest)
    from vaebench.report import build_report

    monkeypatch.chdir(tmp_path)
    fake._write_study()
    study = fake._study(models=["vae_bernoulli"], seeds=[0])
    build_report(study)
    dest = tmp_path / paths.REPORT_HTML.format(study=study.name)
    assert dest.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    wrote = []
    with monkeypatch.context() as mp:
        mp.setattr(Path, "write_text", _failing_write_text(wrote, only_suffix=".html"))
        return _interrupted(dest, lambda: build_report(fake._study(models=["vae_bernoulli"], seeds=[0, 1])),
                            wrote)


SCENARIOS = [npz_prepared, npz_per_image, checkpoint, csv_train_log, csv_claims, json_metrics, png_figure,
             png_samples, report_html]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_a_writer_failing_halfway_leaves_the_earlier_file_and_no_temporary_file(scenario, tmp_path, monkeypatch):
    assert scenario(tmp_path, monkeypatch) == []


# ------------------------------------------------------------------------------------------------
# The checks can tell an atomic writer from a broken one.

@contextlib.contextmanager
def _in_place(path):
    """A non-atomic ``atomic_path``: the writer writes straight onto the destination."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    yield path


@contextlib.contextmanager
def _leaks_temporary(path):
    """A half-atomic ``atomic_path``: writes beside the destination and renames, but leaves the temporary file
    behind when the writer fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.leak.tmp{path.suffix}")
    yield tmp
    os.replace(tmp, path)


def _replace_atomic_path(monkeypatch, replacement) -> None:
    """Put ``replacement`` wherever a vaebench module holds ``atomic_path`` (modules that imported it by name
    keep their own reference)."""
    original = vaebench.atomic.atomic_path
    for name, module in list(sys.modules.items()):
        if name.startswith("vaebench") and getattr(module, "atomic_path", None) is original:
            monkeypatch.setattr(module, "atomic_path", replacement)


@pytest.mark.parametrize("broken, expected", [(_in_place, "the earlier metrics.json was changed"),
                                              (_leaks_temporary, "the folder changed")],
                         ids=["in_place", "leaks_temporary"])
def test_the_checks_detect_a_non_atomic_writer(broken, expected, tmp_path, monkeypatch):
    _replace_atomic_path(monkeypatch, broken)
    assert vaebench.atomic.atomic_path is broken
    problems = json_metrics(tmp_path, monkeypatch)        # the same check as the JSON test
    assert problems, "the JSON check passed a non-atomic writer"
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_every_check_fails_for_an_in_place_writer(scenario, tmp_path, monkeypatch):
    """Each kind's check, run with ``atomic_path`` writing in place, reports the changed earlier file."""
    # import the stage modules first so that their own ``atomic_path`` names get replaced too
    import vaebench.checkpoint, vaebench.data.prepare, vaebench.report.figures  # noqa: E401,F401
    import vaebench.stages.evaluate, vaebench.stages.train  # noqa: E401,F401

    _replace_atomic_path(monkeypatch, _in_place)
    problems = scenario(tmp_path, monkeypatch)
    assert any("was changed" in p for p in problems), problems


def _rename_violations(path: Path, write) -> list[str]:
    """Write ``path`` twice with ``write(path, text)`` while a reader holds the first version open: the reader must
    still read the old bytes (the new file is a new inode put in place by one rename), the new bytes must be there
    and no temporary file may remain."""
    write(path, "old contents\n")
    before = set(os.listdir(path.parent))
    problems = []
    with open(path, "rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        write(path, "new contents, longer than the old ones\n")
        if reader.read() != b"old contents\n":
            problems.append("an open reader of the old file saw other bytes")
    if path.read_text() != "new contents, longer than the old ones\n":
        problems.append("the new contents are not in place")
    if path.stat().st_ino == old_inode:
        problems.append("the new file has the old inode (written in place)")
    if set(os.listdir(path.parent)) != before:
        problems.append(f"folder changed: {sorted(set(os.listdir(path.parent)) ^ before)}")
    return problems


def test_the_final_rename_replaces_the_file_in_one_step(tmp_path):
    assert _rename_violations(tmp_path / "metrics.json", vaebench.atomic.write_text) == []


def test_the_rename_check_catches_copy_then_unlink(tmp_path, monkeypatch):
    """Replacing os.replace with copy-then-unlink (the new bytes copied over the old file) fails the check."""
    import shutil

    def copy_then_unlink(src, dst):
        shutil.copyfile(src, dst)
        os.unlink(src)

    monkeypatch.setattr(vaebench.atomic.os, "replace", copy_then_unlink)
    problems = _rename_violations(tmp_path / "metrics.json", vaebench.atomic.write_text)
    assert "an open reader of the old file saw other bytes" in problems
    assert "the new file has the old inode (written in place)" in problems
