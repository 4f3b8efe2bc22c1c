"""The package's imports run one way (tests parse src/ with ast; nothing is imported), and each stage's source
files are what the stage's code imports."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import REPO
from vaebench import dag, dvc_pipeline
from vaebench.sources import PACKAGE_DIR, import_closure, module_file

SRC = REPO / "src"
# Lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS = {
    "settings": ("vaebench", "vaebench.errors", "vaebench.atomic", "vaebench.registry", "vaebench.paths",
                 "vaebench.sources", "vaebench.dag", "vaebench.seeds", "vaebench.config",
                 "vaebench.dvc_pipeline"),
    "library": ("vaebench.vae", "vaebench.data", "vaebench.metrics", "vaebench.device", "vaebench.checkpoint",
                "vaebench.tracking", "vaebench.shared", "vaebench.grids"),
    "stages and report": ("vaebench.stages", "vaebench.report"),
    "top": ("vaebench.validation", "vaebench.cli", "vaebench.__main__", "vaebench.dev"),
}
APART = ("vaebench.stages", "vaebench.report")     # neither imports the other


def modules() -> list[str]:
    out = []
    for f in sorted((SRC / "vaebench").rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def direct_imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its body (the module itself, not its parents)."""
    path = module_file(module, SRC / "vaebench")
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]) if node.level else node.module
            target = target.rstrip(".")
            # `from pkg import sub` runs pkg/__init__.py first: an edge to the package as well as to the submodule
            names = [target] + [f"{target}.{a.name}" for a in node.names
                                if module_file(f"{target}.{a.name}", SRC / "vaebench")]
        else:
            continue
        for name in names:
            if name == "vaebench" or name.startswith("vaebench."):
                while module_file(name, SRC / "vaebench") is None:
                    name = name.rsplit(".", 1)[0]
                if name != module:
                    found.add(name)
    return found


def layer_of(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS.values()):
        for p in prefixes:
            if (module == p or (p != "vaebench" and module.startswith(p + "."))) and (
                    best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{module} is in no layer of tests/test_layers.py"
    return best[0]


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_layers():
    names = list(LAYERS)
    wrong = []
    for m in modules():
        for d in direct_imports(m):
            if layer_of(d) > layer_of(m):
                wrong.append(f"{m} ({names[layer_of(m)]}) imports {d} ({names[layer_of(d)]})")
            if any(m.startswith(a) for a in APART) and any(d.startswith(b) for b in APART) and \
                    m.split(".")[1] != d.split(".")[1]:
                wrong.append(f"{m} imports {d}: stages and report stay apart")
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path a -> ... -> a, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle({m: direct_imports(m) for m in modules()})
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    assert layer_of("vaebench.config.study") < layer_of("vaebench.stages.train")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("stage", list(dag.STAGES))
def test_stage_sources_hold_every_module_the_stage_imports_when_it_starts(stage):
    """Run the stage's imports as its job does (the CLI, the study loader, the entry module) in a fresh
    interpreter: every module of the package then loaded is among the stage's computed sources."""
    entry = dag.STAGES[stage].entry
    code = ("import sys, importlib, vaebench.cli, vaebench.config as c; "
            f"c.load_study({str(REPO / 'params.yaml')!r}, {str(REPO / 'catalogue.yaml')!r}); "
            f"importlib.import_module({entry!r}); "
            "print('\\n'.join(sorted(m for m in sys.modules if m == 'vaebench' or m.startswith('vaebench.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO).stdout.split()
    closure = set(import_closure([entry, *dag.LOADER], shallow=dag.SHALLOW))
    assert set(loaded) - closure == set()
    files = dag.source_files(stage)
    assert files == sorted(files) and all((REPO / f).is_file() for f in files)
    assert f"src/vaebench/{module_file(entry).relative_to(PACKAGE_DIR).as_posix()}" in files


def test_train_and_evaluate_sources_are_what_they_import():
    train, evaluate, report = (set(dag.source_files(s)) for s in ("train", "evaluate", "report"))
    for f in ("registry.py", "config/study.py", "config/stages.py", "tracking.py", "checkpoint.py",
              "vae/model.py", "vae/sampling.py", "vae/likelihoods/gaussian.py", "data/prepared.py"):
        assert f"src/vaebench/{f}" in train, f
    assert "src/vaebench/metrics/latent.py" in evaluate and "src/vaebench/metrics/latent.py" not in train
    assert "src/vaebench/report/templates/index.html.j2" in report
    assert not any(f.startswith("src/vaebench/report/") for f in train | evaluate)


def test_a_studys_sources_hold_only_the_components_its_models_use():
    """A study's stages depend on the modules of its own components, not on every registered one: adding a
    component (a decoder to the catalogue) changes no other study's pipeline, so nothing of it reruns."""
    from vaebench.config import load_study

    study = load_study(str(REPO / "params.yaml"), str(REPO / "catalogue.yaml"))
    used = dag.components(study.models.values())
    assert used["likelihood"] == {"bernoulli"} and used["posterior"] == {"diagonal", "ar1"}
    for stage in ("train", "evaluate", "report"):
        own, every = set(dag.source_files(stage, study)), set(dag.source_files(stage))
        assert {"src/vaebench/vae/likelihoods/bernoulli.py", "src/vaebench/vae/posteriors/ar1.py",
                "src/vaebench/vae/likelihoods/__init__.py"} <= own < every
        assert not {"src/vaebench/vae/likelihoods/gaussian.py", "src/vaebench/vae/likelihoods/student_t.py",
                    "src/vaebench/vae/objectives/geco.py"} & own
    deps = {d for s in dvc_pipeline.dvc_stages().values() for d in s["deps"] if d.startswith("src/")}
    assert deps == set().union(*(dag.source_files(s, study) for s in dag.STAGES))   # what dvc.yaml tracks
