"""The source files a stage runs: the import closure of its entry modules within the package, read with
:mod:`ast` from the ``import`` statements without importing anything (rules: docs/pipeline.md)."""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Iterable, Mapping

PACKAGE = "vaebench"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of ``module`` (``vaebench.x.y``) under ``package_dir``: ``x/y.py`` or ``x/y/__init__.py``; None
    when it is not a module of the package."""
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for f in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if f is not None and f.is_file():
            return f
    return None


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import, package_dir: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if module_file(sub, package_dir) is not None else target)
    return out


@functools.lru_cache(maxsize=None)
def _imports(module: str, module_level_only: bool, package_dir: Path) -> tuple[str, ...]:
    """The package's modules that ``module`` imports (with their parent packages)."""
    path = module_file(module, package_dir)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for name in _resolve(module, path.name == "__init__.py", node, package_dir):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            while module_file(name, package_dir) is None and "." in name:
                name = name.rsplit(".", 1)[0]
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    found.discard(module)
    return tuple(sorted(found))


def _registry_modules(components: Mapping[str, Iterable[str]] | None, package_dir: Path) -> list[str]:
    """What a job reaches through the registries: every module of the dataset package and, per component axis
    (architecture, posterior, likelihood, objective), the axis's package and the modules defining the named
    ``components`` ({axis: names}); every module of every axis when ``components`` is None. Raises
    UnknownComponentError for a name no module registers."""
    from vaebench.registry import AXES, DATASETS

    out = _package_modules(DATASETS.package, package_dir)
    for axis, reg in AXES.items():
        if components is None:
            out += _package_modules(reg.package, package_dir)
        else:
            out += [reg.package] + [reg.get(name).__module__ for name in sorted(set(components.get(axis, ())))]
    return out


def _package_modules(package: str, package_dir: Path) -> list[str]:
    """``package`` and its modules not starting with '_' (what ``registry.import_submodules`` imports)."""
    folder = module_file(package, package_dir).parent
    out = [package]
    if module_file(package, package_dir).name == "__init__.py":
        out += [f"{package}.{f.stem}" for f in sorted(folder.glob("*.py")) if not f.stem.startswith("_")]
        out += [f"{package}.{d.name}" for d in sorted(folder.iterdir())
                if d.is_dir() and not d.name.startswith("_") and (d / "__init__.py").is_file()]
    return out


def import_closure(roots: list[str], shallow: tuple[str, ...] = (), package_dir: Path = PACKAGE_DIR,
                   components: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Every module of the package that importing ``roots`` can run, sorted; for the ``shallow`` modules only
    module-level imports are followed. Through the registries: the component modules of ``components``
    ({axis: names}; None: all of them), see :func:`_registry_modules`. Raises ValueError if a root is not a module
    of the package."""
    for r in roots:
        if module_file(r, package_dir) is None:
            raise ValueError(f"{r} is not a module of {package_dir}")
    seen: set[str] = set()
    todo = [p for r in roots for p in (".".join(r.split(".")[:i]) for i in range(1, len(r.split(".")) + 1))]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += _imports(m, m in shallow, package_dir)
        if m == f"{PACKAGE}.registry":
            todo += _registry_modules(components, package_dir)
    return sorted(seen)


def _package_data(folder: Path) -> list[Path]:
    """Non-Python files below ``folder`` that belong to no sub-package (e.g. ``report/templates/*.j2``)."""
    out = []
    for p in folder.rglob("*"):
        if not p.is_file() or p.suffix in (".py", ".pyc") or "__pycache__" in p.parts:
            continue
        if not any((folder / d / "__init__.py").is_file() for d in p.relative_to(folder).parents if d != Path(".")):
            out.append(p)
    return out


def closure_files(roots: list[str], shallow: tuple[str, ...] = (), package_dir: Path = PACKAGE_DIR,
                  components: Mapping[str, Iterable[str]] | None = None) -> list[Path]:
    """The files of :func:`import_closure` plus the package data of every package in it, sorted."""
    files = set()
    for m in import_closure(roots, shallow, package_dir, components):
        f = module_file(m, package_dir)
        files.add(f)
        if f.name == "__init__.py":
            files.update(_package_data(f.parent))
    return sorted(files)
