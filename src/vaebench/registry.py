"""Name -> class tables for every pluggable component (a class with a ``name`` and a typed ``Config``) and for
the dataset sources, and the decorator that fills them (design: docs/pipeline.md)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar, Generic, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

T = TypeVar("T")


class StrictConfig(BaseModel):
    """Base of every typed config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ComponentConfig(StrictConfig):
    """Base of a component's typed config. ``name`` (first field) is set to the component's literal name
    when the class is registered: it is the discriminator that selects the component in a model config."""

    name: str


class UnknownComponentError(KeyError):
    """A name that no component of the axis is registered under (the message lists the known names)."""

    def __str__(self) -> str:  # unquoted, unlike KeyError's
        return str(self.args[0])


class Registry(Generic[T]):
    """The components of one axis ``kind``, defined by the modules of ``package`` (imported on first look-up)."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._classes: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` and give ``cls.Config`` the ``name`` literal. Raises
        TypeError (no string ``name``, or ``Config`` not a ComponentConfig) or ValueError (name taken)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__}: a registered {self.kind} needs a class attribute 'name'")
        base = getattr(cls, "Config", ComponentConfig)
        if not (isinstance(base, type) and issubclass(base, ComponentConfig)):
            raise TypeError(f"{cls.__qualname__}.Config must subclass vaebench.registry.ComponentConfig")
        if name in self._classes and self._classes[name] is not cls:
            other = self._classes[name]
            raise ValueError(f"{self.kind} {name!r} is registered twice: {other.__module__}.{other.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__}")
        cls.Config = create_model(
            f"{cls.__name__}Config", __base__=base, __module__=cls.__module__,
            __doc__=base.__doc__ or cls.__doc__,
            name=(Literal[name], ...),
        )
        cls.kind = self.kind
        self._classes[name] = cls
        return cls

    def load(self) -> None:
        """Import every module of ``package`` so that all components are registered (idempotent)."""
        if not self._loaded:
            self._loaded = True
            import_submodules(self.package)

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``; raises UnknownComponentError listing the known names."""
        self.load()
        if name not in self._classes:
            raise UnknownComponentError(
                f"{self.kind}.name: unknown value {name!r} (registered: {', '.join(self.names())})")
        return self._classes[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.load()
        return sorted(self._classes)

    def classes(self) -> list[type[T]]:
        """Registered classes, sorted by name."""
        return [self._classes[n] for n in self.names()]

    def __iter__(self) -> Iterator[type[T]]:
        return iter(self.classes())

    def build(self, config: ComponentConfig | dict, **context: Any) -> T:
        """Instantiate the component a config names: ``cls(**settings(config), **context)``."""
        cfg = config if isinstance(config, ComponentConfig) else None
        name = cfg.name if cfg is not None else dict(config).get("name")
        cls = self.get(name)
        if cfg is None:
            cfg = cls.Config.model_validate(config)
        return cls(**settings(cfg), **context)


def settings(config: ComponentConfig) -> dict[str, Any]:
    """A component config's fields except the ``name`` discriminator, as constructor keyword arguments."""
    return {k: getattr(config, k) for k in type(config).model_fields if k != "name"}


def import_submodules(package: str) -> None:
    """Import every module (not starting with '_') of ``package``; each registers what it defines."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


POSTERIORS: Registry = Registry("posterior", "vaebench.vae.posteriors")
LIKELIHOODS: Registry = Registry("likelihood", "vaebench.vae.likelihoods")
OBJECTIVES: Registry = Registry("objective", "vaebench.vae.objectives")
ARCHITECTURES: Registry = Registry("architecture", "vaebench.vae.networks")
AXES: dict[str, Registry] = {r.kind: r for r in (ARCHITECTURES, POSTERIORS, LIKELIHOODS, OBJECTIVES)}


class DatasetTable:
    """Name -> settings class of every dataset source, and the image-folder settings class (:mod:`vaebench.data`)."""

    def __init__(self, package: str):
        self.package = package
        self._configs: dict[str, type[StrictConfig]] = {}
        self._image_folder: type[StrictConfig] | None = None
        self._loaded = False

    def load(self) -> None:
        """Import ``package`` so that every dataset source is registered (idempotent)."""
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    @property
    def configs(self) -> dict[str, type[StrictConfig]]:
        self.load()
        return self._configs

    @property
    def image_folder(self) -> type[StrictConfig]:
        self.load()
        return self._image_folder

    def register(self, name: str, config: type[StrictConfig]) -> None:
        """Add dataset ``name`` with its settings class. Raises ValueError if ``name`` is taken."""
        if self._configs.get(name, config) is not config:
            raise ValueError(f"dataset {name!r} is registered twice")
        self._configs[name] = config

    def register_image_folder(self, config: type[StrictConfig]) -> None:
        """Set the settings class of an image folder dataset."""
        self._image_folder = config

    def names(self) -> list[str]:
        """Registered dataset names, in registration order."""
        return list(self.configs)


DATASETS = DatasetTable("vaebench.data")


class Component:
    """Base of the component base classes (posterior, likelihood, objective, architecture)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    description: ClassVar[str] = ""

    class Config(ComponentConfig):
        """No settings."""

    @classmethod
    def check_model(cls, model) -> list[tuple[str, str]]:
        """Problems of combining this component with the rest of a ``ModelConfig``: (dotted key, message) pairs."""
        return []
