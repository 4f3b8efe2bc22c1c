"""The pipeline's stages, each declared once in :data:`STAGES`: Snakemake rules, CLI commands and dvc.yaml."""
from __future__ import annotations

import dataclasses

from vaebench.paths import (CAPTION_CURVES, CAPTION_RECON, CAPTION_REPORT, CAPTION_SAMPLES, CHECKPOINT,
                            CLAIMS, CLASSIFIER, CLASSIFIER_METRICS, FID_INCEPTION_REFERENCE,
                            FID_REFERENCE, METRICS, PER_IMAGE, PREPARED, RECON_PNG, REPORT_CLAIMS, REPORT_FIGURES,
                            REPORT_HEADLINE, REPORT_HTML, REPORT_MD, REPORT_METRICS, REPORT_PLOTS, SAMPLES_PNG,
                            SUMMARY_CSV, TRAIN_LOG)
from vaebench.sources import PACKAGE_DIR, closure_files

SRC = "src/vaebench"
LOADER = ("vaebench.config", "vaebench.cli", "vaebench.__main__")
SHALLOW = ("vaebench.cli",)

STUDY, CAT = "study", "catalogue"


@dataclasses.dataclass(frozen=True)
class ReportItem:
    """How ``snakemake --report`` shows one output of a stage: ``caption`` file, ``category`` and
    ``subcategory``, row ``labels`` (wildcards allowed) and, for a folder, the file ``patterns`` to include."""

    caption: str
    category: str
    subcategory: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    patterns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the DAG (sizing of the resources: docs/pipeline.md).

    Attributes:
        name: the stage, the CLI subcommand and the Snakemake rule.
        over: the grid axes it runs once per value of (subset of dataset, model, seed, in that order).
        entry: the module that runs a job; its import closure is the stage's code (:func:`source_files`).
        deps, outs: files it reads and writes, by role (templates over ``over``); ``dirs``: roles that are folders.
        grid_deps: files it reads for every cell of the study (templates over dataset, model, seed).
        metrics, uncached, plots: roles of ``outs`` kept in git rather than the DVC cache; ``plots`` maps each
            to its dvc.yaml plot properties (``x``, ``y``, ``template``).
        report: roles of ``outs`` that ``snakemake --report`` shows, each with its :class:`ReportItem`.
        params: (file, key) slices whose change reruns it; file is STUDY or CAT, the key may use ``over``.
        threads: torch intra-op threads, passed as ``--threads`` by both engines.
        gpu: whether a job may use the GPU (Snakemake resource ``gpu=1``).
        mem_mb: peak resident memory of one job with headroom, MiB (Snakemake resource ``mem_mb``).
        runtime: wall-time limit of one job, minutes (Snakemake resource ``runtime``; SLURM ``--time``).
        priority: Snakemake's scheduling priority (higher first among ready jobs).
    """

    name: str
    help: str
    over: tuple[str, ...]
    entry: str
    outs: dict[str, str]
    deps: dict[str, str] = dataclasses.field(default_factory=dict)
    grid_deps: dict[str, str] = dataclasses.field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    uncached: tuple[str, ...] = ()
    plots: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    report: dict[str, ReportItem] = dataclasses.field(default_factory=dict)
    params: tuple[tuple[str, str], ...] = ()
    threads: int = 1
    gpu: bool = False
    mem_mb: int = 2000
    runtime: int = 60
    priority: int = 0

    def command(self, **values) -> list[str]:
        """The CLI words of one job: ``vaebench <name> --<axis> <value> ... --threads <n>``."""
        words = [self.name]
        for axis in self.over:
            words += [f"--{axis}", str(values[axis])]
        return words + ["--threads", str(self.threads)]

    def _job_path(self) -> str:
        parts = [f"{{{a}}}" if a != "seed" else "seed{seed}" for a in self.over]
        return f"{{study}}/{self.name}/" + ("/".join(parts) if parts else self.name)

    def log(self) -> str:
        """Snakemake's log file template of a job."""
        return f"logs/{self._job_path()}.log"

    def benchmark(self) -> str:
        """Snakemake's benchmark file template of a job (wall time, peak RSS)."""
        return f"benchmarks/{self._job_path()}.tsv"


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(
        name="prepare", help="download (or read from a mirror), verify and split a dataset",
        over=("dataset",),
        entry="vaebench.stages.prepare",
        outs={"data": PREPARED},
        params=((STUDY, "datasets.{dataset}"),),
        runtime=15,
    ),
    Stage(
        name="classifier", help="train the FID feature classifier of a dataset",
        over=("dataset",),
        entry="vaebench.stages.classifier",
        deps={"data": PREPARED},
        outs={"model": CLASSIFIER, "metrics": CLASSIFIER_METRICS},
        params=((STUDY, "classifier"), (STUDY, "device")),
        gpu=True,
        runtime=30,
        priority=10,
    ),
    Stage(
        name="fid_reference", help="FID reference statistics of a dataset's test split and its FID floor",
        over=("dataset",),
        entry="vaebench.stages.fid_reference",
        deps={"data": PREPARED, "classifier": CLASSIFIER},
        outs={"reference": FID_REFERENCE, "inception": FID_INCEPTION_REFERENCE},
        params=((STUDY, "evaluate"), (STUDY, "device")),
        gpu=True,
        runtime=30,
        priority=10,
    ),
    Stage(
        name="train", help="train one cell (dataset x model x seed)",
        over=("dataset", "model", "seed"),
        entry="vaebench.stages.train",
        deps={"data": PREPARED},
        outs={"checkpoint": CHECKPOINT, "log": TRAIN_LOG},
        params=((CAT, "models.{model}"), (STUDY, "models.{model}"), (STUDY, "components"),
                (STUDY, "train"), (STUDY, "device")),
        gpu=True,
        runtime=120,
    ),
    Stage(
        name="evaluate", help="evaluate one cell: ELBO, L_k and its diagnostic, latent analysis, FID, grids",
        over=("dataset", "model", "seed"),
        entry="vaebench.stages.evaluate",
        deps={"data": PREPARED, "checkpoint": CHECKPOINT, "classifier": CLASSIFIER, "fid_reference": FID_REFERENCE,
              "inception_reference": FID_INCEPTION_REFERENCE},
        outs={"metrics": METRICS, "per_image": PER_IMAGE, "samples": SAMPLES_PNG, "recon": RECON_PNG},
        report={"samples": ReportItem(CAPTION_SAMPLES, "Samples", "{dataset}",
                                      labels={"model": "{model}", "seed": "{seed}"}),
                "recon": ReportItem(CAPTION_RECON, "Reconstructions", "{dataset}",
                                    labels={"model": "{model}", "seed": "{seed}"})},
        params=((STUDY, "models.{model}"), (STUDY, "evaluate"), (STUDY, "device")),
        gpu=True,
        runtime=120,
    ),
    Stage(
        name="report", help="render reports/ from every cell of the study",
        over=(),
        entry="vaebench.report",
        deps={"claims": CLAIMS},
        grid_deps={"metrics": METRICS, "per_image": PER_IMAGE, "samples": SAMPLES_PNG, "recon": RECON_PNG,
                   "log": TRAIN_LOG},
        outs={"summary": SUMMARY_CSV, "html": REPORT_HTML, "markdown": REPORT_MD, "figures": REPORT_FIGURES,
              "metrics": REPORT_METRICS, "headline": REPORT_HEADLINE, "claims": REPORT_CLAIMS,
              "plots": REPORT_PLOTS},
        dirs=("figures", "plots"),
        metrics=("headline",),
        uncached=("claims", "html", "summary", "metrics"),     # committed in git with the study (reports/.gitignore)
        plots={"plots": {"x": "epoch", "template": "training_curves"}},
        report={"figures": ReportItem(
                    CAPTION_CURVES, "Training curves", "{dataset}", labels={"figure": "{figure}"},
                    patterns=("{dataset}_{figure,validation_curves|training_curves|log_sigma_lambda}.png",)),
                "html": ReportItem(CAPTION_REPORT, "Report")},
        params=((STUDY, "study"), (STUDY, "datasets"), (STUDY, "models"), (STUDY, "seeds")),
        runtime=20,
    ),
)}
REPORT_OUTPUTS = list(STAGES["report"].outs.values())


def components(model_configs) -> dict[str, set[str]]:
    """{axis: component names} used by ``model_configs`` (an iterable of ModelConfig), one set per registry axis."""
    from vaebench.registry import AXES

    out: dict[str, set[str]] = {axis: set() for axis in AXES}
    for m in model_configs:
        for axis in AXES:
            out[axis].add(getattr(m, axis).name)
    return out


def source_files(stage: str, study=None) -> list[str]:
    """The source files of a stage, repository-relative and sorted: the import closure of its entry module, the
    study loader and the CLI's module-level imports, with package data (:func:`vaebench.sources.closure_files`).
    With a ``study`` (a loaded Study), only the component modules its models use: a component added to the
    catalogue changes no other study's stages. Without one, every component module."""
    used = None if study is None else components(study.models.values())
    return [f"{SRC}/{f.relative_to(PACKAGE_DIR).as_posix()}" for f in source_paths(stage, used)]


def source_paths(stage: str, used: dict[str, set[str]] | None = None) -> list:
    """The files of :func:`source_files` as absolute paths of the package this process imports; ``used``: the
    {axis: names} of the components the job runs (:func:`components`; None: all)."""
    return closure_files([STAGES[stage].entry, *LOADER], shallow=SHALLOW, components=used)


def tracked_study_keys() -> set[str]:
    """The top-level keys of a study file that some stage tracks as a params slice."""
    return {key.split(".")[0] for s in STAGES.values() for file, key in s.params if file == STUDY}
