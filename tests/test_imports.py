"""Layers without cycles: no module of `regzoo` imports a module that imports it back, directly
or through others, counting imports inside functions and under `TYPE_CHECKING` (the ones a cycle
hides in). Every module of every subpackage is read, `regzoo.studies`' layers included."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

# Top-level folders of the repository, installed as subpackages of `regzoo` (package-dir).
PACKAGES = ("regzoo", "regzoo.zoo", "regzoo.datamodules", "regzoo.studies")


def module_files() -> dict[str, Path]:
    """Every module of regzoo, subpackages included, by dotted name."""
    files: dict[str, Path] = {}
    todo = list(PACKAGES)
    while todo:
        package = todo.pop()
        folder = Path(importlib.import_module(package).__file__ or "").parent
        files[package] = folder / "__init__.py"
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{package}.{info.name}"
            if info.ispkg:
                if name not in PACKAGES:
                    todo.append(name)
            else:
                files[name] = folder / f"{info.name}.py"
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `name` imports anywhere in its file; `from pkg import sub` counts as
    an import of `pkg.sub` when that is a module, else of `pkg`."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*parts, base] if base else parts)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in subs if t in known] or [base]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_the_graph_sees_the_imports_that_matter() -> None:
    graph = import_graph()
    assert "regzoo.zoo.classifier" in graph["regzoo.zoo._registry"]
    assert "regzoo._registry" in graph["regzoo.datamodules._registry"]
    assert "regzoo.datamodules._albu_augment" in graph["regzoo.datamodules.base"]  # in a function
    assert "regzoo.studies.trial.train" in graph["regzoo.studies.loop.study"]  # subpackages too
    assert "regzoo.studies.config.validate" in graph["regzoo.studies.config.load"]
    assert len([m for m in graph if m.startswith("regzoo.studies.experiments.")]) >= 10
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
