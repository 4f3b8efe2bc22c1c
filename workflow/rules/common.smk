# Shared helpers: load and validate the study, and build every rule's input, output, params, resources
# and command from the stage declarations of vaebench.dag.STAGES (the source dvc.yaml is generated from).
import os
import sys

import yaml

from vaebench import dag, paths
from vaebench.config import ConfigError
from vaebench.validation import load_study
from vaebench.device import visible_gpus

# A study given with --configfile replaces params.yaml instead of being deep-merged into it.
if not workflow.overwrite_configfiles:

    configfile: paths.DEFAULT_STUDY


STUDY_FILE = (os.path.relpath(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles
              else paths.DEFAULT_STUDY)
# Validate before any job runs: a bad key stops the whole workflow with one message naming it (no traceback).
try:
    STUDY = load_study(STUDY_FILE)
except (ConfigError, FileNotFoundError) as _exc:
    print(f"vaebench: invalid study: {_exc}", file=sys.stderr)
    sys.exit(1)
# A top-level key the study file leaves out (train, evaluate, ...) is tracked at its default value.
_DEFAULTS = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
             for k, v in STUDY.config if k not in config and k in dag.tracked_study_keys()}
with open(paths.CATALOGUE, encoding="utf-8") as _f:
    PARAMS_FILES = {dag.STUDY: {**_DEFAULTS, **dict(config)}, dag.CAT: yaml.safe_load(_f)}
# The interpreter running Snakemake has vaebench installed (works without activating the venv).
VAEBENCH = f"{sys.executable} -m vaebench"
STAGES = dag.STAGES


def in_study(template):
    """A path template of vaebench.paths with this study's name in place of {study}: every output of a study lives
    under its name, so another study's run never touches it."""
    return template.replace("{study}", STUDY.name)


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_]+",
    seed="[0-9]+",


def stage_inputs(stage):
    """Input function: the stage's source files, its per-job inputs and its inputs over the whole grid."""
    s = STAGES[stage]
    sources = dag.source_files(stage, STUDY)

    def inputs(wildcards):
        out = {"sources": sources}
        out.update({role: t.format(study=STUDY.name, **wildcards) for role, t in s.deps.items()})
        for role, t in s.grid_deps.items():
            out[role] = [t.format(study=STUDY.name, dataset=d, model=m, seed=sd) for d, m, sd in STUDY.cells()]
        return out

    return inputs


def stage_outputs(stage):
    """The stage's outputs by role: folders as directory(), and the roles it shows in `snakemake --report`
    wrapped in report() with their caption (a path from the repository root), category and labels."""
    s = STAGES[stage]
    outs = {}
    for role, t in s.outs.items():
        t = in_study(t)
        out = directory(t) if role in s.dirs else t
        item = s.report.get(role)
        if item is not None:
            out = report(out, caption=os.path.join(workflow.basedir, item.caption), category=item.category,
                         subcategory=item.subcategory, labels=item.labels or None, patterns=list(item.patterns))
        outs[role] = out
    return outs


def _lookup(file, key):
    value = PARAMS_FILES[file]
    for part in key.split("."):
        value = value[part]
    return value


def stage_params(stage):
    """One param per tracked slice, named after it; its value records (file, key, value), so a change of
    the slice reruns the job (Snakemake's params trigger) and the metadata names what was tracked."""
    s = STAGES[stage]
    params = {}
    def value(file, key, w):
        model = w.model if "model" in w.keys() else None
        if model in STUDY.sweeps:
            if (file, key) == (dag.STUDY, "models.{model}"):       # the point's own settings, not the whole sweep
                return (file, key.format(**w), STUDY.models[model].model_dump(mode="json", exclude_none=True))
            key = key.format(**{**w, "model": STUDY.entry_name(model)})
        else:
            key = key.format(**w)
        return (file, key, _lookup(file, key))

    for i, (file, key) in enumerate(s.params):
        params[f"slice{i}"] = (lambda w, file=file, key=key: value(file, key, w))
    return params


def stage_shell(stage):
    s = STAGES[stage]
    words = s.command(**{a: f"{{wildcards.{a}}}" for a in s.over})
    return f"{VAEBENCH} {' '.join(words)} --params {STUDY_FILE} 2> {{log}}"


# GPU jobs (vaebench.dag.Stage.gpu) each take one `gpu_slots`; how many run at once is the global
# `gpu_slots`: `--resources gpu_slots=N` (command line or profile), else one per GPU torch sees here (none on
# a machine without one: then GPU stages run on the CPU and nothing limits them but cores and mem_mb). Each
# job picks its own GPU from the slot it claims (vaebench.device). `gpu: 1` is the number of GPUs a job asks a
# cluster scheduler for (e.g. the SLURM executor's GPU request).
GPUS = visible_gpus(STUDY.device)
if GPUS and "gpu_slots" not in workflow.global_resources:
    workflow.register_resource("gpu_slots", GPUS)


# The prepared data (MiB) that a stage's declared mem_mb already holds: MNIST's file is 55 MiB, Frey Face's 1.
DATA_IN_DECLARED_MB = 500
PREPARED_DIR = os.path.dirname(in_study(paths.PREPARED))


def stage_resources(stage):
    """Snakemake resources of a stage's jobs: its declared peak memory, its wall-time limit in minutes
    (`runtime`: a cluster executor's time request, e.g. SLURM --time; a local run ignores it) and, for GPU
    stages, one GPU and one GPU slot. Threads are the rule's `threads:` (a cluster executor's CPU request:
    SLURM --cpus-per-task). A job that loads a prepared dataset holds it in memory: mem_mb grows by the
    file's size beyond DATA_IN_DECLARED_MB (CelebA at 64x64, 2.4 GiB of uint8, adds about 2 GiB); the size is
    read when the job is scheduled, once the file exists. A study's `resources` replace all of it with the
    job's measured peak (e.g. a video model's activations)."""
    s = STAGES[stage]

    def mem_mb(wildcards, input):
        if stage in STUDY.config.resources:
            return STUDY.config.resources[stage].mem_mb
        data = sum(os.path.getsize(f) for f in input
                   if os.path.dirname(f) == PREPARED_DIR and os.path.exists(f)) / 2**20
        return s.mem_mb + max(0, int(data) + 1 - DATA_IN_DECLARED_MB)

    return {"mem_mb": mem_mb, "runtime": s.runtime, **({"gpu": 1, "gpu_slots": 1} if s.gpu else {})}


onstart:
    # create the MLflow store and experiment once, before parallel jobs race on them
    shell(f"{VAEBENCH} mlflow-init --params {STUDY_FILE}")


onerror:
    # a study that failed before any training run leaves no empty experiment behind
    shell(f"{VAEBENCH} mlflow-init --params {STUDY_FILE} --drop-if-empty")
