"""Command-line interface: ``python -m vaebench <stage> ...``, one subcommand per pipeline stage.

Every subcommand validates the study file first, so a bad params file stops the job before it writes
anything. Snakemake (workflow/rules/*.smk) and DVC (dvc.yaml) call exactly these commands.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from vaebench.config import DEFAULT_PARAMS, ConfigError, cells, load_params
from vaebench.errors import StageError


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=DEFAULT_PARAMS, help="study file (default: params.yaml)")


def _add_cell(p: argparse.ArgumentParser, with_model: bool = True) -> None:
    p.add_argument("--dataset", required=True)
    if with_model:
        p.add_argument("--model", required=True)
        p.add_argument("--seed", required=True, type=int)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate the study file and list its cells")
    _add_params(p)
    p = sub.add_parser("prepare", help="download (or read from a mirror), verify and split a dataset")
    _add_params(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--mirror", default=os.environ.get("VAEBENCH_DATA_MIRROR"),
                   help="offline mirror folder holding <mirror>/<dataset>/ (default: $VAEBENCH_DATA_MIRROR)")
    p = sub.add_parser("classifier", help="train the FID feature classifier of a dataset")
    _add_params(p)
    _add_cell(p, with_model=False)
    for name, help_ in (("train", "train one cell"), ("evaluate", "evaluate one cell")):
        p = sub.add_parser(name, help=help_)
        _add_params(p)
        _add_cell(p)
    p = sub.add_parser("report", help="render reports/ from every cell of the study")
    _add_params(p)
    p = sub.add_parser("mlflow-init", help="create the MLflow store and the study's experiment (before parallel jobs)")
    _add_params(p)
    return parser


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if args.command == "validate":
        print(json.dumps({"study": params["study"], "cells": cells(params)}, indent=1))
    elif args.command == "prepare":
        from vaebench import paths
        from vaebench.data import prepare_dataset

        _check_in_grid(params, dataset=args.dataset)
        summary = prepare_dataset(args.dataset, params["datasets"][args.dataset],
                                  paths.PREPARED.format(dataset=args.dataset), mirror=args.mirror)
        print(json.dumps(summary, indent=1, default=str))
    elif args.command == "classifier":
        import torch

        from vaebench import paths
        from vaebench.classifier import save_classifier, train_classifier
        from vaebench.data import load_prepared
        from vaebench.io import write_json
        from vaebench.train import pick_device

        _check_in_grid(params, dataset=args.dataset)
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = dict(params["classifier"])
        seed = cfg.pop("seed")
        data = load_prepared(paths.PREPARED.format(dataset=args.dataset))
        model, metrics = train_classifier(data, cfg, pick_device(params["train"]["device"]), seed=seed)
        save_classifier(paths.CLASSIFIER.format(dataset=args.dataset), model, metrics)
        write_json(paths.CLASSIFIER_METRICS.format(dataset=args.dataset), metrics)
        print(json.dumps(metrics, indent=1))
    elif args.command == "train":
        from vaebench.train import train_cell

        _check_in_grid(params, dataset=args.dataset, model=args.model, seed=args.seed)
        train_cell(params, args.dataset, args.model, args.seed, threads=args.threads)
    elif args.command == "evaluate":
        from vaebench.evaluate import evaluate_cell

        _check_in_grid(params, dataset=args.dataset, model=args.model, seed=args.seed)
        metrics = evaluate_cell(params, args.dataset, args.model, args.seed, threads=args.threads)
        print(json.dumps({k: metrics[k] for k in ("test_elbo_nats", "test_nll_iwae_nats", "fid_classifier")}, indent=1))
    elif args.command == "report":
        from vaebench.report import build_report

        print(json.dumps(build_report(params), indent=1, default=str))
    elif args.command == "mlflow-init":
        from vaebench.tracking import Tracker

        Tracker(params["study"]).ensure_experiment()


def _check_in_grid(params: dict, dataset: str, model: str | None = None, seed: int | None = None) -> None:
    grid = params["grid"]
    if dataset not in grid["datasets"]:
        raise ConfigError(f"dataset '{dataset}' is not in grid.datasets {grid['datasets']}")
    if model is not None and model not in grid["models"]:
        raise ConfigError(f"model '{model}' is not in grid.models {grid['models']}")
    if seed is not None and seed not in grid["seeds"]:
        raise ConfigError(f"seed {seed} is not in grid.seeds {grid['seeds']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for invalid input, 1 for a failed stage)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ConfigError as exc:
        print(f"vaebench: invalid study: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"vaebench: missing file: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # stage failures with a complete message of their own (data checksum, diverging loss) are
        # reported without a traceback; anything else is a bug and keeps its traceback
        if isinstance(exc, StageError):
            print(f"vaebench: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    return 0
