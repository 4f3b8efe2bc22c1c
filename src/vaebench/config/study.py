"""Studies: load a study file, merge the model catalogue into it, validate everything, resolve cells. An error
names the file, the key, the bad value and the allowed values (the layers of a study: docs/pipeline.md)."""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, TypeAdapter, ValidationError,
                      create_model, field_validator)

from vaebench import dag, paths
from vaebench.config.stages import ClassifierConfig, EvaluateConfig, TrainConfig
from vaebench.registry import AXES, DATASETS, StrictConfig

DEFAULT_STUDY = paths.DEFAULT_STUDY
NAME_PATTERN = r"^[A-Za-z0-9_]+$"


class ConfigError(ValueError):
    """A study or the catalogue is invalid; the message names the file, the key and the bad value."""


# Per-model overrides of the stages' typed configs

def partial(cls: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A model with the fields of ``cls``, each optional (default None) with the same constraints: an
    override layer whose unset keys leave the underlying value alone."""
    fields = {}
    for fname, f in cls.model_fields.items():
        if fname == "name":
            continue
        info = copy.copy(f)
        info.default = None
        info.default_factory = None
        fields[fname] = (f.annotation | None, info)
    return create_model(name, __base__=StrictConfig, __doc__=doc, **fields)


TrainOverride = partial(TrainConfig, "TrainOverride", "Per-model overrides of the study's train section.")
EvaluateOverride = partial(EvaluateConfig, "EvaluateOverride",
                           "Per-model overrides of the study's evaluate section (e.g. for costly decoders).")


# Model configs, built from the registries

class ModelConfig(BaseModel):
    """A model: latent_dim plus one component of each axis, each ``{name: ..., <its settings>}``.

    The concrete class (:func:`model_config_class`) adds the fields ``architecture``, ``posterior``,
    ``likelihood`` and ``objective`` as discriminated unions over the registered components.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="One line for the report and MLflow.")
    latent_dim: int = Field(..., ge=1, le=65536, description="Dimension d of the latent z (of a hierarchical "
                                                             "model: the whole latent path, every layer).")


def _axis_union(axis: str):
    configs = [cls.Config for cls in AXES[axis]]
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[tuple(configs)], Field(discriminator="name")]


@functools.lru_cache(maxsize=None)
def _model_classes(names: tuple) -> tuple[type[ModelConfig], type[ModelConfig]]:
    # ``names`` (every registered name per axis) only keys the cache: a new component rebuilds the classes
    fields = {axis: (_axis_union(axis), Field(..., description=f"The {axis}: {{name: ..., settings}}."))
              for axis in AXES}
    model = create_model("ModelConfig", __base__=ModelConfig, __doc__=ModelConfig.__doc__, **fields)
    entry = create_model(
        "ModelEntry", __base__=model,
        __doc__="A catalogue entry (or a study's merged entry): a model config plus per-model stage overrides.",
        train=(TrainOverride | None, None), evaluate=(EvaluateOverride | None, None))
    return model, entry


def _registered() -> tuple:
    return tuple((axis, tuple(reg.names())) for axis, reg in AXES.items())


def model_config_class() -> type[ModelConfig]:
    """The concrete ModelConfig over every component registered now (rebuilt when a component is added)."""
    return _model_classes(_registered())[0]


def model_entry_class() -> type[ModelConfig]:
    """ModelConfig plus the optional per-model ``train`` and ``evaluate`` overrides."""
    return _model_classes(_registered())[1]


def check_combination(model: ModelConfig) -> list[tuple[str, str]]:
    """Problems across components (each component class's ``check_model``), as (dotted key inside the model,
    message) pairs."""
    problems = []
    for axis, reg in AXES.items():
        problems += reg.get(getattr(model, axis).name).check_model(model)
    return problems


def validate_model(entry: dict, source: str = "<model>", prefix: str = "") -> ModelConfig:
    """Validate one complete model config dict (no train/evaluate overrides) into a ModelConfig. Raises
    ConfigError naming ``source``, the key (under ``prefix``), the bad value and what is allowed."""
    cls = model_config_class()
    try:
        model = cls.model_validate(entry)
    except ValidationError as exc:
        raise _config_error(exc, source, prefix, cls, entry) from None
    problems = check_combination(model)
    if problems:
        key, msg = problems[0]
        raise ConfigError(f"{source}: invalid combination at '{_join(prefix, key)}': {msg}")
    return model


# The study

def _components_class() -> type[BaseModel]:
    fields = {}
    for axis, reg in AXES.items():
        per_name = {cls.name: (partial(cls.Config, f"{cls.__name__}Settings", f"Settings of {axis} {cls.name!r}.")
                               | None, None) for cls in reg}
        fields[axis] = (create_model(f"{axis.capitalize()}Settings", __base__=StrictConfig, **per_name) | None, None)
    return create_model("ComponentSettings", __base__=StrictConfig,
                        __doc__="Settings of components for every model of the study that uses them.", **fields)


class ModelOverride(BaseModel):
    """What a study changes in a catalogue entry: any model key (deep-merged onto the entry, then the
    whole entry is validated) and the per-model stage overrides."""

    model_config = ConfigDict(extra="allow", frozen=True)

    train: TrainOverride | None = None
    evaluate: EvaluateOverride | None = None
    sweep: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")],
                Annotated[list[Union[int, float, str, list[int]]], Field(min_length=1)]] | None = Field(
        None, description="Settings to sweep, each a key inside the model (latent_dim, objective.beta, objective.k, "
                          "objective.kappa, architecture.hidden_dims) with its values; every combination is a model of "
                          "its own, named <model>_<last key part><value> (0.001 -> 0p001, -1 -> m1, [512, 256] -> "
                          "512x256), e.g. beta_vae_beta0p001.")


def sweep_points(name: str, sweep: dict[str, list]) -> dict[str, dict[str, Any]]:
    """{point name: {dotted key: value}} of every combination of a model's ``sweep`` values, in the order given."""
    import itertools

    def token(v) -> str:
        text = "x".join(map(str, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)
        return re.sub(r"[^A-Za-z0-9]", "", text.replace(".", "p").replace("-", "m").replace("+", ""))

    keys = list(sweep)
    out = {}
    for combo in itertools.product(*(sweep[k] for k in keys)):
        label = "_".join(f"{k.split('.')[-1]}{token(v)}" for k, v in zip(keys, combo))
        out[f"{name}_{label}"] = dict(zip(keys, combo))
    return out


def _nested(values: dict[str, Any]) -> dict:
    """{'objective.beta': 0.1} -> {'objective': {'beta': 0.1}}."""
    out: dict = {}
    for key, v in values.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


class _DatasetSettingsBase(StrictConfig):
    """Registered datasets are fields; any other name is an extra key (an image folder's settings)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True,
                              json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN}})


def _datasets_class() -> type[BaseModel]:
    """The ``datasets`` section: one optional key per registered dataset; any other name is an image folder."""
    image_folder = DATASETS.image_folder

    class _WithImageFolders(_DatasetSettingsBase):
        __pydantic_extra__: dict[str, image_folder] = Field(init=False)

    fields = {name: (cls | None, Field(None, description=(cls.__doc__ or "").strip().split("\n")[0]))
              for name, cls in DATASETS.configs.items()}
    return create_model("DatasetSettings", __base__=_WithImageFolders,
                        __doc__="The grid's datasets (at least one), each with its own preparation settings: the "
                                "registered ones by name, and any other name with kind: image_folder for a folder "
                                "of your own images.",
                        **fields)


_IMAGE_FOLDER_KEYS = TypeAdapter(dict[Annotated[str, Field(pattern=NAME_PATTERN)], Any])


def _dataset_keys() -> TypeAdapter:
    return TypeAdapter(dict[Literal[tuple(DATASETS.configs)], Any])


def _is_image_folder(value: Any) -> bool:
    return isinstance(value, dict) and value.get("kind") == "image_folder"


def _datasets_by_name(value: Any, handler) -> dict[str, StrictConfig]:
    """Validate ``datasets`` key by key, each dataset's settings by its own class (an unknown name without
    ``kind: image_folder`` is an error at that key). Returns {name: settings} in the file's order."""
    if isinstance(value, dict):
        registered = DATASETS.configs
        _dataset_keys().validate_python({k: v for k, v in value.items()
                                         if k in registered or not _is_image_folder(v)})
        _IMAGE_FOLDER_KEYS.validate_python({k: v for k, v in value.items() if k not in registered})
    typed = handler(value)
    out = {name: getattr(typed, name) or DATASETS.configs[name]() for name in value}
    if not out:
        raise ValueError("at least one dataset is required")
    return out


class PublishedValue(StrictConfig):
    """One number of the source, next to ours in the reproduction index and the study's report."""

    dataset: str = Field(..., pattern=NAME_PATTERN, description="The study's dataset it belongs to.")
    model: str = Field(..., pattern=NAME_PATTERN, description="The study's model it belongs to.")
    metric: str = Field(..., description="A metric of the report's records (vaebench.metrics.spec), e.g. "
                                         "test_elbo_nats, test_nll_iwae_nats, fid_inception, test_kl_nats, test_sse.")
    value: float = Field(..., description="As published, in that metric's unit and sign (a published loss -ELBO of "
                                          "107.7 is test_elbo_nats -107.7).")
    note: str = Field("", description="Where it is printed and how it was read (e.g. digitised from a figure).")


class StudySource(StrictConfig):
    """The seed experiment a study reproduces: the paper's table or figure, its protocol and our deviations."""

    paper: str = Field(..., description="Authors, year and title (short).")
    experiment: str = Field(..., description="The table or figure, e.g. 'Table 3' or 'Fig. 1, MNIST'.")
    protocol: str = Field(..., description="The source's protocol: network, latent size, data scaling, epochs, "
                                           "batch, optimiser and schedule, evaluation.")
    deviations: list[str] = Field(default_factory=list, description="Each difference from the source, with why.")
    status: Literal["fits a CPU", "needs a GPU", "needs data"] = Field(
        ..., description="'fits a CPU': runs to its protocol on a 2-core CPU machine within a few hours; "
                         "else what it needs.")
    cost: str = Field(..., description="Its measured time here, or the estimate of what it needs and how it was "
                                       "estimated.")
    published: list[PublishedValue] = Field(default_factory=list, description="The source's numbers.")


class StageResources(StrictConfig):
    """What one job of a stage needs in this study, where its models or data need more than the stage
    declares (:data:`vaebench.dag.STAGES`)."""

    mem_mb: PositiveInt = Field(..., description="Peak resident memory of one job with headroom, MiB (Snakemake "
                                                 "resource mem_mb, SLURM --mem); replaces the stage's declared "
                                                 "mem_mb and the prepared data it adds.")


@functools.lru_cache(maxsize=None)
def _study_train_class() -> type[BaseModel]:
    """The study's ``train`` section: :class:`TrainConfig` plus ``per_dataset``, overrides for one dataset."""
    return create_model(
        "StudyTrainConfig", __base__=TrainConfig,
        __doc__="Training settings of the study, with per-dataset overrides.",
        per_dataset=(dict[Annotated[str, Field(pattern=NAME_PATTERN)], TrainOverride], Field(
            default_factory=dict, description="Per-dataset overrides of these settings, e.g. "
                                              "{frey_face: {epochs: 60}} ({} for none); a key is a registered "
                                              "dataset or one of the study's datasets (e.g. an image folder).")))


def _study_classes(names: tuple) -> type[BaseModel]:
    model_name = Annotated[str, Field(pattern=NAME_PATTERN)]
    return create_model(
        "StudyConfig", __base__=StrictConfig,
        __doc__="A study: the grid datasets x models x seeds and the settings of every stage.",
        study=(str, Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Study name; the MLflow experiment name.")),
        source=(StudySource | None, Field(None, description="The seed experiment this study reproduces (none for a "
                                                            "study of your own).")),
        device=(Literal["auto", "cpu", "cuda"], Field("auto", description="auto = CUDA when available, else CPU.")),
        seeds=(list[NonNegativeInt], Field(..., min_length=1, description="Training seeds of every model.")),
        datasets=(_datasets_class(), Field(
            ..., description="The grid's datasets, each with its own preparation settings ({} or null for the "
                             "defaults).", json_schema_extra={"minProperties": 1})),
        models=(dict[model_name, ModelOverride | None], Field(
            ..., min_length=1, description=f"The grid's models: names from the catalogue ({paths.CATALOGUE}), each "
                                           "with what this study changes ({} or null for nothing).")),
        components=(_components_class(), Field(default_factory=_components_class(), description=(
            "Settings of a component for every model of this study that uses it (a model's own entry wins), "
            "e.g. the hidden widths of an architecture for every model; left out or {} for none)."))),
        train=(_study_train_class(), Field(default_factory=_study_train_class(),
                                           description="Training settings (left out or {} for the defaults).")),
        classifier=(ClassifierConfig, Field(default_factory=ClassifierConfig,
                                            description="FID classifier settings (left out or {} for the defaults).")),
        evaluate=(EvaluateConfig, Field(default_factory=EvaluateConfig,
                                        description="Evaluation settings (left out or {} for the defaults).")),
        resources=(dict[Literal[tuple(dag.STAGES)], StageResources], Field(
            default_factory=dict, description="Per stage, what its jobs need in this study where that exceeds the "
                                              "stage's declaration, e.g. {train: {mem_mb: 4000}} for a video "
                                              "model's activations ({} for none). Changes no result.")),
        __validators__={"_datasets_by_name": field_validator("datasets", mode="wrap")(_datasets_by_name)},
    )


def study_config_class() -> type[BaseModel]:
    """The concrete StudyConfig over every component and dataset registered now."""
    return _study_classes(_registered())


class Study:
    """A validated study: ``config`` (the typed study), ``models`` (model name -> its merged ModelEntry) and
    ``source`` (the study file, named in errors)."""

    def __init__(self, config: BaseModel, models: dict[str, ModelConfig], source: str,
                 sweeps: dict[str, tuple[str, dict[str, Any]]] | None = None):
        self.config, self.models, self.source = config, models, source
        self.sweeps = sweeps or {}          # point name -> (the study's model key, {dotted key: value})

    name = property(lambda self: self.config.study)
    device = property(lambda self: self.config.device)
    seeds = property(lambda self: list(self.config.seeds))
    dataset_names = property(lambda self: list(self.config.datasets))
    model_names = property(lambda self: list(self.models))

    def entry_name(self, model: str) -> str:
        """The key under ``models`` of the study file (and the catalogue) that defines ``model`` (a sweep point's
        model, else ``model`` itself)."""
        return self.sweeps[model][0] if model in self.sweeps else model

    def cells(self) -> list[tuple[str, str, int]]:
        """The grid as (dataset, model, seed) triples, in the order of the study file."""
        return [(d, m, s) for d in self.dataset_names for m in self.model_names for s in self.seeds]

    def check_cell(self, dataset: str, model: str | None = None, seed: int | None = None) -> None:
        """Raise ConfigError unless the dataset (and model, seed) belong to the grid."""
        if dataset not in self.dataset_names:
            raise ConfigError(f"{self.source}: dataset '{dataset}' is not in the study's datasets {self.dataset_names}")
        if model is not None and model not in self.model_names:
            raise ConfigError(f"{self.source}: model '{model}' is not in the study's models {self.model_names}")
        if seed is not None and seed not in self.seeds:
            raise ConfigError(f"{self.source}: seed {seed} is not in the study's seeds {self.seeds}")

    def cell(self, dataset: str, model: str, seed: int) -> "Cell":
        """The complete configuration of one cell: what the checkpoint, the metrics and MLflow record."""
        self.check_cell(dataset, model, seed)
        entry = self.models[model]
        train = {**self.config.train.model_dump(exclude={"per_dataset"}),
                 **_set_fields(self.config.train.per_dataset.get(dataset)), **_set_fields(entry.train)}
        evaluate = {**self.config.evaluate.model_dump(), **_set_fields(entry.evaluate)}
        return Cell(
            study=self.name, dataset=dataset, model=model, seed=int(seed), device=self.device,
            model_config=model_config_class().model_validate(entry.model_dump(exclude={"train", "evaluate"})),
            train=TrainConfig(**train), evaluate=EvaluateConfig(**evaluate),
            data=self.config.datasets[dataset],
        )


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid cell (dataset x model x seed) with every setting resolved."""

    study: str
    dataset: str
    model: str
    seed: int
    device: str
    model_config: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    data: StrictConfig              # the dataset's own settings class (registry.DATASETS)

    def record(self) -> dict:
        """Plain nested dict (lists, numbers, strings) for checkpoints, metrics files and MLflow params."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.model_dump(mode="json", by_alias=True) if isinstance(v, BaseModel) else v
        return out


def _set_fields(override: BaseModel | None) -> dict:
    return {} if override is None else override.model_dump(exclude_none=True)


# Loading, merging, errors

def _read_yaml(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` laid onto ``base``: mappings merge key by key (recursively), anything else replaces, and so
    does a mapping that names another component (``{name: b}`` over ``{name: a, width: 3}`` gives ``{name: b}``)."""
    if isinstance(base, dict) and isinstance(over, dict) and base.get("name", over.get("name")) == over.get("name", base.get("name")):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _has_path(d: Any, path: tuple) -> bool:
    for part in path:
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def load_catalogue(path: str | os.PathLike = paths.CATALOGUE) -> dict[str, dict]:
    """The catalogue's raw entries by model name, each checked to be a valid ModelEntry. Raises
    FileNotFoundError (no catalogue file) or ConfigError naming the catalogue file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model catalogue not found: {path} (run from the repository root)")
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or set(raw) != {"models"}:
        raise ConfigError(f"{path}: expected one top-level key 'models' mapping model names to model configs")
    cls = model_entry_class()
    for name, entry in raw["models"].items():
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise ConfigError(f"{path}: invalid model name {name!r} at 'models' (letters, digits and _ only)")
        try:
            cls.model_validate(entry)
        except ValidationError as exc:
            raise _config_error(exc, str(path), f"models.{name}", cls, entry) from None
    return raw["models"]


def resolve_model(name: str, catalogue_entry: dict, override: dict | None, components: dict,
                  study_source: str, catalogue_source: str) -> ModelConfig:
    """Merge one model's layers (lowest first: the study's ``components`` settings, the catalogue entry, the
    study's override) and validate the result; a ConfigError names the layer that supplied the bad value."""
    override = override or {}
    merged = deep_merge(catalogue_entry, override)
    component_layers = {}                # axis -> key of the components setting merged under the entry
    for axis, per_name in (components or {}).items():
        comp = merged.get(axis)
        if isinstance(comp, dict) and comp.get("name") in (per_name or {}):
            merged[axis] = deep_merge(per_name[comp["name"]], comp)
            component_layers[axis] = f"components.{axis}.{comp['name']}"
    cls = model_entry_class()
    try:
        model = cls.model_validate(merged)
    except ValidationError as exc:
        loc = _normalise_loc(exc.errors()[0]["loc"], merged)
        source, prefix = catalogue_source, f"models.{name}"       # default: the entry should define it
        if _has_path(override, loc[:1]) and (_has_path(override, loc) or not _has_path(catalogue_entry, loc)):
            source = study_source
        elif not _has_path(catalogue_entry, loc) and loc[0] in component_layers:
            source, prefix, loc = study_source, component_layers[loc[0]], loc[1:]
        raise _config_error(exc, source, prefix, cls, merged, loc=loc) from None
    problems = check_combination(model)
    if problems:
        key, msg = problems[0]
        src = study_source if _has_path(override, tuple(key.split("."))) else catalogue_source
        raise ConfigError(f"{src}: invalid combination at 'models.{name}.{key}': {msg}")
    return model


def validate_study(raw: Any, source: str = DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """Validate a parsed study and resolve every model of its grid against the catalogue. Raises ConfigError
    naming the file (study or catalogue), the dotted key, the bad value and the allowed values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    cls = study_config_class()
    try:
        config = cls.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, source, "", cls, raw) from None
    entries = load_catalogue(catalogue)
    models, sweeps = {}, {}
    for name, typed in config.models.items():
        if name not in entries:
            raise ConfigError(f"{source}: model '{name}' at 'models' is not in the catalogue {catalogue}"
                              f"{did_you_mean(name, entries)} (defined: {', '.join(sorted(entries))})")
        override = dict((raw["models"] or {}).get(name) or {})
        override.pop("sweep", None)
        points = sweep_points(name, typed.sweep) if typed and typed.sweep else {name: {}}
        for point, values in points.items():
            if point in models or (point != name and point in config.models):
                raise ConfigError(f"{source}: the sweep of 'models.{name}' makes the model name '{point}' twice "
                                  "(or a name the study already uses)")
            models[point] = resolve_model(name, entries[name], deep_merge(override, _nested(values)),
                                          raw.get("components"), source, str(catalogue))
            if values:
                sweeps[point] = (name, values)
    _check_per_dataset(config, source)
    for i, p in enumerate(config.source.published if config.source else []):
        if p.dataset not in config.datasets or p.model not in models:
            raise ConfigError(f"{source}: 'source.published.{i}' names dataset {p.dataset!r} and model {p.model!r}, "
                              f"but the study has datasets {list(config.datasets)} and models {list(models)}")
    return Study(config, models, source, sweeps)


def _check_per_dataset(config, source: str) -> None:
    """Raise ConfigError for a ``train.per_dataset`` key that is neither a registered dataset nor the study's."""
    for name in config.train.per_dataset:
        if name not in DATASETS.configs and name not in config.datasets:
            raise ConfigError(f"{source}: unknown key 'train.per_dataset.{name}': neither a registered dataset "
                              f"({', '.join(sorted(DATASETS.configs))}) nor a dataset of this study "
                              f"({', '.join(config.datasets)})")


def load_study(path: str | os.PathLike = DEFAULT_STUDY, catalogue: str | os.PathLike = paths.CATALOGUE) -> Study:
    """Read and validate a study file (:func:`validate_study`). Raises FileNotFoundError (no study or catalogue
    file) or ConfigError (YAML syntax or an invalid value) naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    return validate_study(_read_yaml(path), source=str(path), catalogue=catalogue)


def did_you_mean(word: str, options, prefix: str = " ") -> str:
    """``" (did you mean 'sigma_vae'?)"`` for the option closest to ``word`` by :func:`difflib.get_close_matches`
    (ratio at least 0.6), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"{prefix}(did you mean '{close[0]}'?)" if close else ""


def _join(prefix: str, key: str) -> str:
    return ".".join(p for p in (prefix, key) if p)


def _normalise_loc(loc: tuple, data: Any) -> tuple[str, ...]:
    """A pydantic error location as the keys of the input: drop the tags pydantic inserts after a
    discriminated union (``objective.<name>.beta`` -> ``objective.beta``)."""
    out, node = [], data
    for part in loc:
        part = str(part)
        if isinstance(node, dict) and part not in node and node.get("name") == part:
            continue                                   # the union tag, not a key of the input
        out.append(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[int(part)] if isinstance(node, list) and part.isdigit() and int(part) < len(node) else None)
    return tuple(out)


def _config_error(exc: ValidationError, source: str, prefix: str, cls: type[BaseModel], data: Any,
                  loc: tuple | None = None) -> ConfigError:
    """The first error of a pydantic ValidationError as one sentence: file, key, bad value, allowed values;
    ``loc`` (normalised) replaces the error's location in the message."""
    errors = exc.errors()
    # A misspelt key is reported as both an unknown key and a missing one: name the misspelling.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    data_loc = _normalise_loc(err["loc"], data)
    shown = data_loc if loc is None else _normalise_loc(loc, data) if loc else loc
    value, msg = err.get("input"), err["msg"]
    named = re.findall(r"'([^']+)'", " ".join(str(v) for v in (err.get("ctx") or {}).values()))
    if shown and shown[-1] == "[key]":                 # a bad key of a mapping (e.g. an unknown dataset)
        parent = _join(prefix, ".".join(shown[:-2]))
        return ConfigError(f"{source}: invalid key {value!r} at '{parent}'{did_you_mean(value, named)}: {msg}")
    key = _join(prefix, ".".join(shown)) or "<top level>"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(cls, data_loc[:-1], data)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return ConfigError(f"{source}: unknown key '{key}'{did_you_mean(data_loc[-1], allowed)}{hint}")
    if err["type"] == "missing":
        return ConfigError(f"{source}: missing required key '{key}'")
    if err["type"] == "union_tag_invalid" and isinstance(value, dict):     # an unknown component name
        key, value = f"{key}.name", value.get("name")
    guess = did_you_mean(value, named) if isinstance(value, str) else ""
    return ConfigError(f"{source}: invalid value at '{key}': {value!r}{guess}: {msg}")


def _strip(annotation):
    """Unwrap Annotated[...] and Optional[...] to the underlying type (None when it is not one model)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (Union, type(int | None)) else None
    if args is not None and len(args) == 1:
        return _strip(args[0])
    return annotation


def _allowed_keys(cls: Any, loc: tuple, data: Any) -> list[str]:
    """The keys the model at ``loc`` (inside ``cls`` validating ``data``) accepts, for an error message."""
    node, value = cls, data
    for part in loc:
        node = _strip(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part) or next(
                (f for f in node.model_fields.values() if f.alias == part), None)
            if field is None and issubclass(node, _DatasetSettingsBase):     # an image folder's settings
                node, value = DATASETS.image_folder, value.get(part) if isinstance(value, dict) else None
                continue
            if field is None:
                return []
            node, value = field.annotation, value.get(part) if isinstance(value, dict) else None
        elif get_origin(node) is dict:
            node, value = get_args(node)[1], value.get(part) if isinstance(value, dict) else None
        else:
            return []
        node = _strip(node)
        if get_origin(node) is Union and isinstance(value, dict):   # a discriminated union: pick by name
            node = next((m for m in get_args(node) if isinstance(m, type) and issubclass(m, BaseModel)
                         and m.model_fields.get("name") is not None
                         and get_args(m.model_fields["name"].annotation) == (value.get("name"),)), node)
    node = _strip(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or n for n, f in node.model_fields.items()]
    return []


# JSON schemas

def json_schemas() -> dict[str, dict]:
    """{path: JSON schema} of the study file and of the catalogue, generated from the typed configs."""
    study = study_config_class().model_json_schema(by_alias=True)
    entry = model_entry_class().model_json_schema(by_alias=True)
    catalogue = {
        "title": "vaebench model catalogue",
        "type": "object",
        "additionalProperties": False,
        "required": ["models"],
        "properties": {"models": {
            "type": "object",
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": "#/$defs/ModelEntry"},
        }},
        "$defs": {**entry.pop("$defs", {}), "ModelEntry": entry},
    }
    study["title"] = "vaebench study"
    header = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    return {paths.STUDY_SCHEMA: {**header, **study}, paths.CATALOGUE_SCHEMA: {**header, **catalogue}}


def schema_texts() -> dict[str, str]:
    """{path: file text} of the generated schemas (YAML with a do-not-edit header)."""
    out = {}
    for path, schema in json_schemas().items():
        out[path] = ("# Generated by `python -m vaebench schema` from the typed configs of vaebench and its\n"
                     "# registered components. Do not edit: change the code and regenerate.\n"
                     + yaml.safe_dump(schema, sort_keys=False, width=110, allow_unicode=True))
    return out
