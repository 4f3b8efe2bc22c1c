"""Command-line interface: ``python -m vaebench <command> ...``, one subcommand per pipeline stage plus
the generators of the committed files (``schema``, ``dvc-yaml``) and the benchmark ``bench`` (:mod:`vaebench.dev.bench`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from vaebench import dag, paths
from vaebench.errors import StageError


def _study(args):
    from vaebench.config import load_study

    return load_study(args.params)


def cmd_validate(args) -> None:
    from vaebench.validation import load_study

    study = load_study(args.params)
    print(json.dumps({"study": study.name, "cells": study.cells()}, indent=1))


def cmd_prepare(args) -> None:
    from vaebench.stages import prepare

    print(json.dumps(prepare.run(_study(args), args.dataset, mirror=args.mirror), indent=1, default=str))


def cmd_classifier(args) -> None:
    from vaebench.stages import classifier

    print(json.dumps(classifier.run(_study(args), args.dataset), indent=1))


def cmd_fid_reference(args) -> None:
    from vaebench.stages import fid_reference

    print(json.dumps(fid_reference.run(_study(args), args.dataset), indent=1))


def cmd_train(args) -> None:
    from vaebench.stages import train

    train.run(_study(args), args.dataset, args.model, args.seed)


def cmd_evaluate(args) -> None:
    from vaebench.stages import evaluate

    metrics = evaluate.run(_study(args), args.dataset, args.model, args.seed)
    print(json.dumps({k: metrics[k] for k in ("test_elbo_nats", "test_nll_iwae_nats", "lk_gap_nats",
                                              "fid_classifier", "eval_seconds")}, indent=1))


def cmd_report(args) -> None:
    from vaebench.report import build_report

    print(json.dumps(build_report(_study(args)), indent=1, default=str))


def cmd_mlflow_init(args) -> None:
    from vaebench.tracking import Tracker

    tracker = Tracker(_study(args).name)
    if args.drop_if_empty:
        if tracker.drop_if_empty():
            print(f"MLflow: experiment {tracker.experiment!r} held no run and was removed", file=sys.stderr)
        return
    exp = tracker.ensure_experiment()
    if exp is not None:
        print(f"MLflow: experiment {tracker.experiment!r} (id {exp}) in {tracker.uri}"
              f"; browse it with `mlflow ui --backend-store-uri <that store>` at "
              f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning (its Runs table; "
              "without workflowType the UI opens on its GenAI overview)")


def cmd_bench(args) -> None:
    from pydantic import ValidationError

    from vaebench.dev import bench

    given = {k: v for k, v in vars(args).items() if k in bench.BenchConfig.model_fields and v is not None}
    try:
        cfg = bench.BenchConfig(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"vaebench: bench: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']} "
              f"(got {err.get('input')!r})", file=sys.stderr)
        raise SystemExit(2) from None
    print(bench.format_table(bench.run(cfg)))


def _write_if_changed(path: str, text: str, check: bool, command: str) -> bool:
    """Write ``text`` to ``path`` unless it is already there; with ``check``, only compare. True if current."""
    from vaebench.atomic import write_text

    current = os.path.isfile(path) and open(path, encoding="utf-8").read() == text
    if not current and not check:
        write_text(path, text)
        print(f"wrote {path}")
    elif not current:
        print(f"{path} is out of date: run `python -m vaebench {command}`", file=sys.stderr)
    return current


def cmd_schema(args) -> None:
    from vaebench.config import schema_texts

    ok = all([_write_if_changed(p, t, args.check, "schema") for p, t in schema_texts().items()])
    if args.check and not ok:
        raise SystemExit(1)


def cmd_dvc_yaml(args) -> None:
    from vaebench.dvc_pipeline import dvc_yaml_texts

    ok = all([_write_if_changed(p, t, args.check, "dvc-yaml") for p, t in dvc_yaml_texts().items()])
    if args.check and not ok:
        raise SystemExit(1)


def cmd_readme(args) -> None:
    from vaebench.report import readme

    ok = readme.write_all(_study(args), check=args.check, write=_write_if_changed)
    if args.check and not ok:
        raise SystemExit(1)


def cmd_dvc_template(args) -> None:
    from vaebench.dev import dvc_template

    try:
        code = dvc_template.main(check=args.check, force=args.force, registry=args.registry)
    except (OSError, ValueError) as exc:   # no registry (URLError is an OSError), or a tarball's hash differs
        print(f"vaebench: dvc-template: {exc}; {dvc_template.TEMPLATE} was not written: `dvc plots show` will "
              "not render offline (nothing else needs it)", file=sys.stderr)
        code = 1
    if code:
        raise SystemExit(code)


STAGE_COMMANDS = {"prepare": cmd_prepare, "classifier": cmd_classifier, "fid_reference": cmd_fid_reference,
                  "train": cmd_train, "evaluate": cmd_evaluate, "report": cmd_report}


def add_config_flags(parser: argparse.ArgumentParser, config: type, defaults: dict | None = None) -> None:
    """One flag ``--<field-name>`` per field of the pydantic ``config`` class, its help the field's description
    and default (the one definition of both): lists take several values, Literals become choices. Every flag
    defaults to None (= the field's default) unless ``defaults`` gives a value (e.g. from the environment)."""
    import typing

    for name, field in config.model_fields.items():
        kwargs: dict = {"default": (defaults or {}).get(name)}
        ann = field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        base = args[0] if typing.get_origin(ann) is typing.Union or type(ann).__name__ == "UnionType" else ann
        if typing.get_origin(base) is typing.Annotated:          # PositiveInt and the like: int plus a bound
            base = typing.get_args(base)[0]
        if typing.get_origin(base) is list:
            kwargs.update(nargs="+", type=typing.get_args(base)[0])
        elif typing.get_origin(base) is typing.Literal:
            kwargs["choices"] = typing.get_args(base)
        elif base in (int, float):
            kwargs["type"] = base
        default = field.default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        kwargs["help"] = f"{field.description} (default: {shown})"
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_params(p):
        p.add_argument("--params", default=paths.DEFAULT_STUDY, help=f"study file (default: {paths.DEFAULT_STUDY})")
        return p

    with_params(sub.add_parser("validate", help="validate the study and the catalogue, list the cells")
                ).set_defaults(func=cmd_validate)
    for stage in dag.STAGES.values():
        p = with_params(sub.add_parser(stage.name, help=stage.help))
        for axis in stage.over:
            p.add_argument(f"--{axis}", required=True, type=int if axis == "seed" else str)
        p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
        if stage.name == "prepare":
            p.add_argument("--mirror", default=os.environ.get("VAEBENCH_DATA_MIRROR"),
                           help="offline mirror folder holding <mirror>/<dataset>/ (default: $VAEBENCH_DATA_MIRROR)")
        p.set_defaults(func=STAGE_COMMANDS[stage.name])
    p = with_params(sub.add_parser("mlflow-init", help="create the MLflow store and the study's experiment "
                                                       "(before parallel jobs)"))
    p.add_argument("--drop-if-empty", action="store_true",
                   help="instead, remove the study's experiment if it holds no run (after a failed workflow)")
    p.set_defaults(func=cmd_mlflow_init)
    for name, func, what in (("schema", cmd_schema, "the JSON schemas of studies and the catalogue"),
                             ("dvc-yaml", cmd_dvc_yaml, "dvc.yaml from the stage declarations"),
                             ("readme", cmd_readme, "the README's generated sections (the reproduction index of "
                                                    "every study, components, results of the default study from "
                                                    "reports/<study>/) and reports/index.html")):
        p = with_params(sub.add_parser(name, help=f"write {what} (generated, committed)"))
        p.add_argument("--check", action="store_true", help="only check that the committed file is current")
        p.set_defaults(func=func)
    from vaebench.dev.bench import BenchConfig   # torch, as every stage command; torchvision only when it runs

    p = sub.add_parser("bench", help=f"benchmark our training loop against the sigma-VAE reference loop shape "
                                     f"and the L_k evaluation's cost; writes {paths.BENCH_JSON} (not a stage)")
    add_config_flags(p, BenchConfig, defaults={"mirror": os.environ.get("VAEBENCH_DATA_MIRROR")})
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("dvc-template", help="build .dvc/plots/offline.html, the page `dvc plots show` renders "
                                            "offline (vega, vega-lite, vega-embed from the npm registry, "
                                            "SHA-512 checked; not committed)")
    p.add_argument("--check", action="store_true", help="only check that it is built and current")
    p.add_argument("--force", action="store_true", help="download and write it even if it is current")
    p.add_argument("--registry", default="https://registry.npmjs.org", help="npm registry (or a mirror)")
    p.set_defaults(func=cmd_dvc_template)
    return parser


def return_freed_memory(period_s: float = 1.0) -> bool:
    """Start a daemon thread that calls glibc's ``malloc_trim(0)`` every ``period_s`` seconds, so that freed heap
    memory goes back to the system. Returns False (and does nothing) without glibc."""
    import ctypes
    import threading
    import time

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False

    def loop():
        while True:
            trim(0)
            time.sleep(period_s)

    threading.Thread(target=loop, name="malloc_trim", daemon=True).start()
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for invalid input, 1 for a failed stage)."""
    args = build_parser().parse_args(argv)
    if args.func in STAGE_COMMANDS.values():
        return_freed_memory()
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    from vaebench.config import ConfigError

    try:
        args.func(args)
    except ConfigError as exc:
        print(f"vaebench: invalid study: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"vaebench: missing file: {exc}", file=sys.stderr)
        return 2
    except StageError as exc:
        # a complete message of its own: no traceback
        print(f"vaebench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
