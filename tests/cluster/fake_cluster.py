"""A stand-in for a batch scheduler (``sbatch`` + ``squeue``) for Snakemake's generic cluster executor
(snakemake-executor-plugin-cluster-generic), used by tests/test_cluster.py.

Every job runs as its own detached process (a new session, so not a child of Snakemake's process group), with a
scrubbed environment (PATH, HOME, the MLflow and vaebench variables, PYTHONPATH naming the job's own copy of the
package), in a fresh scratch folder that holds a copy of the workspace's pipeline definition (what
``conftest.make_workspace`` copies: :data:`DEFINITION`) plus ONLY the job's declared input files, read from the
properties Snakemake embeds in the jobscript. When the job succeeds its declared outputs, log and benchmark are
copied back into the workspace; the log is copied back when it fails too (for ``--show-failed-logs``). A job
that reads a file it does not declare, or depends on the submitting shell's environment, fails here.

Commands (the executor appends the jobscript, or the job id)::

    python fake_cluster.py submit <jobscript>    # prints the job id
    python fake_cluster.py status <jobid>        # prints running, success or failed

State lives in ``$FAKE_CLUSTER_DIR/<jobid>/``: ``job.json`` (what was submitted and where it runs),
``scratch/`` (the job's working folder), ``job.out`` (its stdout and stderr), ``env.json`` (the environment
and session the job saw), ``exitcode`` (written last, after the outputs are back).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STATE_ENV = "FAKE_CLUSTER_DIR"
# The pipeline definition every job gets: the files and folders conftest.make_workspace copies (a test checks
# the two agree), params.yaml included.
DEFINITION = ("Snakefile", "dvc.yaml", "catalogue.yaml", "claims.yaml", ".dvcignore", "params.yaml",
              "workflow", "profiles", "studies", "pipelines", "src")
# The variables a job keeps from the submitting environment (besides PATH and HOME). OPENBLAS_* is the machine's
# BLAS kernel choice (set on these machines; a cluster node sets it the same way): without it numpy picks another
# kernel and an FID moves in the 11th digit.
KEEP_PREFIXES = ("MLFLOW_", "VAEBENCH_", "OPENBLAS_")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info")


def copy_path(src: Path, dst: Path) -> None:
    """Copy a file (with its times) or a folder tree to ``dst``, creating parents; a file lands atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=_IGNORE)
    else:
        tmp = dst.with_name(dst.name + ".fake-cluster-tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def _new_jobdir(state: Path) -> tuple[str, Path]:
    state.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            (state / str(n)).mkdir()
            return str(n), state / str(n)
        except FileExistsError:
            n += 1


def job_env(scratch: Path) -> dict[str, str]:
    """The whole environment of a job: nothing else of the submitting process leaks in."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(scratch)),
           # the package the job imports is its own copy (the workspace's src/, as conftest.env sets)
           "PYTHONPATH": str(scratch / "src")}
    env.update({k: v for k, v in os.environ.items() if k.startswith(KEEP_PREFIXES)})
    return env


def submit(jobscript: str) -> str:
    from snakemake.utils import read_job_properties

    jobscript = Path(jobscript).resolve()
    text = jobscript.read_text()
    props = read_job_properties(str(jobscript))
    # the exec line starts with `cd <working directory> && ...` (a shared working directory is assumed)
    m = re.search(r"^cd (\S+) &&", text, re.M)
    if not m:
        raise SystemExit(f"fake_cluster: no `cd <workdir> &&` in {jobscript}:\n{text}")
    workdir = Path(shlex.split(m.group(1))[0]).resolve()
    jobid, jobdir = _new_jobdir(Path(os.environ[STATE_ENV]))
    scratch = jobdir / "scratch"
    scratch.mkdir()
    for name in DEFINITION:
        if (workdir / name).exists():
            copy_path(workdir / name, scratch / name)
    inputs = list(props["input"])
    for rel in inputs:
        if not (scratch / rel).exists():
            copy_path(workdir / rel, scratch / rel)
    # The job's own Snakemake runs in the scratch folder: every absolute path of the workspace in the exec line
    # (cd, --snakefile, the jobscript folder it waits for) and in the jobscript's side files (the list of files
    # to wait for, when the job has more than 20) now names the scratch copy.
    job_script = scratch / jobscript.relative_to(workdir)
    job_script.parent.mkdir(parents=True, exist_ok=True)
    for f in jobscript.parent.glob(jobscript.name + "*"):
        (job_script.parent / f.name).write_text(f.read_text().replace(str(workdir), str(scratch)))

    sys.path.insert(0, str(scratch / "src"))
    from vaebench.dag import STAGES

    rule, wildcards = props["rule"], props.get("wildcards", {})
    # a stage's log and benchmark live under its study's name (logs/<study>/<stage>/...): the study of this job
    study = Path(props["log"][0]).parts[1] if rule in STAGES and props.get("log") else None
    benchmark = STAGES[rule].benchmark().format(study=study, **wildcards) if rule in STAGES else None
    manifest = {"jobid": jobid, "rule": rule, "wildcards": wildcards, "workdir": str(workdir),
                "scratch": str(scratch), "jobscript": str(job_script), "input": inputs,
                "output": list(props["output"]), "log": list(props.get("log", [])), "benchmark": benchmark,
                "resources": props.get("resources", {}), "threads": props.get("threads")}
    (jobdir / "job.json").write_text(json.dumps(manifest, indent=1))
    with open(jobdir / "job.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "run", str(jobdir)],
                                cwd=scratch, env=job_env(scratch), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    (jobdir / "pid").write_text(str(proc.pid))
    return jobid


def run(jobdir: str) -> int:
    """The detached job: run the jobscript in its scratch folder, then copy its outputs back."""
    jobdir = Path(jobdir)
    job = json.loads((jobdir / "job.json").read_text())
    scratch, workdir = Path(job["scratch"]), Path(job["workdir"])
    (jobdir / "env.json").write_text(json.dumps(
        {"environ": dict(os.environ), "pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd()}, indent=1))
    rc = subprocess.run(["/bin/sh", job["jobscript"]], cwd=scratch).returncode
    declared = job["output"] + ([job["benchmark"]] if job["benchmark"] else [])
    if rc == 0:
        missing = [p for p in declared if not (scratch / p).exists()]
        if missing:
            print(f"fake_cluster: job finished without its outputs {missing}", flush=True)
            rc = 1
        else:
            for rel in declared:
                copy_path(scratch / rel, workdir / rel)
    for rel in job["log"]:
        if (scratch / rel).exists():
            copy_path(scratch / rel, workdir / rel)
    tmp = jobdir / "exitcode.tmp"
    tmp.write_text(str(rc))
    os.replace(tmp, jobdir / "exitcode")      # last: status says success only once the outputs are back
    return rc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead too (the job is reparented to init, which reaps it, but not instantly)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def status(jobid: str) -> str:
    jobdir = Path(os.environ[STATE_ENV]) / jobid
    code = jobdir / "exitcode"
    if code.exists():
        return "success" if code.read_text().strip() == "0" else "failed"
    if _alive(int((jobdir / "pid").read_text())):
        return "running"
    # it may have written its exit code just before exiting
    if code.exists():
        return "success" if code.read_text().strip() == "0" else "failed"
    return "failed"


def cancel_all(state: Path) -> list[str]:
    """Kill every job of ``state`` still running (its whole session); the ids of those killed."""
    killed = []
    for pidfile in state.glob("*/pid"):
        pid = int(pidfile.read_text())
        if not (pidfile.parent / "exitcode").exists() and _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)       # a new session: its process group id is its pid
                killed.append(pidfile.parent.name)
            except ProcessLookupError:
                pass
    return killed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("submit", "status", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    command, arg = argv
    if command == "submit":
        print(submit(arg))
    elif command == "status":
        print(status(arg))
    else:
        return run(arg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
