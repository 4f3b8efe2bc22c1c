"""Study configuration: load a params file, validate it against the one JSON schema, resolve cells.

The schema lives in ``workflow/schemas/config.schema.yaml``; Snakemake (``workflow/rules/common.smk``)
and the Python CLI both call :func:`validate_params`, so a bad key stops everything before any job
starts, with a message naming the key (e.g. ``models.beta_vae.objective.beta``).
"""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_PARAMS = "params.yaml"


class ConfigError(ValueError):
    """A study file is invalid; the message names the file and the offending key."""


def _schema_path() -> Path:
    # Editable installs find the schema beside the package; a plain install run from a checkout finds
    # it in the working directory.
    for candidate in (SCHEMA_PATH, Path.cwd() / "workflow" / "schemas" / "config.schema.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config schema not found at {SCHEMA_PATH} (run vaebench from the repository root)")


@functools.lru_cache(maxsize=1)
def _load_schema_cached() -> dict:
    with open(_schema_path(), encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_schema() -> dict:
    """The study JSON schema as a dict (read once per process; a copy, safe to modify)."""
    return copy.deepcopy(_load_schema_cached())


def _extend_with_defaults(validator_class):
    # The documented jsonschema recipe: fill "default" values while validating, so the CLI and the
    # Snakefile (common.smk calls validate_params at workflow load) see identical resolved configs.
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def validate_params(params: Any, source: str = DEFAULT_PARAMS) -> dict:
    """Validate a study dict against the schema, fill defaults, and check the grid.

    Args:
        params: the parsed study file.
        source: file name used in error messages.
    Returns:
        A deep copy of ``params`` with schema defaults filled in.
    Raises:
        ConfigError: naming ``source`` and the dotted key of the first (most specific) violation.
    """
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(params).__name__}")
    params = copy.deepcopy(params)
    # the empty sections a study may omit are filled before validation so their defaults apply
    for section in ("classifier", "evaluate", "train"):
        params.setdefault(section, {})
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (-len(e.absolute_path), str(e.message)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: invalid value at '{_key_path(best)}': {best.message}")
    check_grid(params, source)
    return params


def check_grid(params: dict, source: str = DEFAULT_PARAMS) -> None:
    """Cross-field rules JSON Schema cannot express: every grid name must be defined.

    Raises:
        ConfigError: naming the undefined model or dataset and the key where it is used.
    """
    for i, name in enumerate(params["grid"]["models"]):
        if name not in params["models"]:
            known = ", ".join(sorted(params["models"]))
            raise ConfigError(f"{source}: grid.models[{i}] = '{name}' is not defined under 'models' (defined: {known})")
    datasets = params.setdefault("datasets", {})
    dataset_defaults = {k: sub.get("default") for k, sub in load_schema()["$defs"]["dataset"]["properties"].items()}
    for name in params["grid"]["datasets"]:
        entry = datasets.setdefault(name, {})
        for key, default in dataset_defaults.items():
            entry.setdefault(key, default)


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """Read and validate a study file.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: YAML syntax error or schema violation, naming the file and key.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate_params(raw, source=str(path))


def cells(params: dict) -> list[tuple[str, str, int]]:
    """The grid as (dataset, model, seed) triples, in grid order."""
    g = params["grid"]
    return [(d, m, s) for d in g["datasets"] for m in g["models"] for s in g["seeds"]]


def resolve_cell(params: dict, dataset: str, model: str, seed: int) -> dict:
    """The complete configuration of one training cell: what the checkpoint and MLflow record.

    Raises:
        ConfigError: the dataset or model is not part of the study.
    """
    if model not in params["models"]:
        raise ConfigError(f"model '{model}' is not defined under 'models'")
    if dataset not in params["datasets"]:
        raise ConfigError(f"dataset '{dataset}' is not defined under 'datasets'")
    model_cfg = copy.deepcopy(params["models"][model])
    train = {**params["train"], **model_cfg.pop("train", {})}
    evaluate = {**params["evaluate"], **model_cfg.pop("evaluate", {})}
    return {
        "study": params["study"],
        "dataset": dataset,
        "model": model,
        "seed": int(seed),
        "model_cfg": model_cfg,
        "train": train,
        "evaluate": evaluate,
        "data": copy.deepcopy(params["datasets"][dataset]),
    }
