"""Layers without cycles: no module of `regzoo` imports a module that imports it back, directly
or through others, counting imports inside functions and under `TYPE_CHECKING` (the ones a cycle
hides in). Every module of every subpackage is read, `regzoo.studies`' layers included.

Layers in order: every import between two of `regzoo.studies`' layers goes downward, in the
order docs/architecture.md lists them, so the documentation and the code cannot drift apart."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def import_graph(files: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Each module's imports of other known modules, over `files` (default: all of regzoo)."""
    files = module_files() if files is None else files
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"
STUDIES = "regzoo.studies"
OUTSIDE = {STUDIES: "the front", f"{STUDIES}._compat": "_compat"}  # not layers


def documented_order(text: str) -> list[str]:
    """The layers of `regzoo.studies`, top first, from the one line `cli -> ... -> config`."""
    lines = re.findall(r"^\s*(cli\s*->.*)$", text, flags=re.MULTILINE)
    assert len(lines) == 1, f"one `cli -> ... -> config` line expected, found {lines}"
    return [layer.strip() for layer in lines[0].split("->")]


def layer_of(module: str) -> str | None:
    """`regzoo.studies.<layer>.…` -> <layer>; None for a module outside regzoo.studies."""
    if module in OUTSIDE:
        return OUTSIDE[module]
    parts = module.split(".")
    return parts[2] if parts[:2] == STUDIES.split(".") and len(parts) > 2 else None


def upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[str]:
    """Every import from a studies layer into the same or a lower one is allowed (and into
    `_compat`); one into a higher layer, the front, or a folder the order does not list is not.
    `_compat` itself, beneath every layer, imports none of them."""
    rank = {layer: i for i, layer in enumerate(order)}
    wrong = []
    for module in sorted(graph):
        own = layer_of(module)
        if own == "_compat":
            wrong += [f"{module} imports {t}" for t in sorted(graph[module]) if layer_of(t)]
        if own is None or module in OUTSIDE:
            continue
        if own not in rank:
            wrong.append(f"{module}: layer {own!r} is not in the documented order")
            continue
        for target in sorted(graph[module]):
            layer = layer_of(target)
            if layer is None or layer == "_compat" or layer == own:
                continue
            if rank.get(layer, -1) < rank[own]:  # the front or an unlisted folder ranks above all
                wrong.append(f"{module} ({own}) imports {target} ({layer}), a layer above it")
    return wrong


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


def test_the_documented_order_names_every_layer_of_the_studies() -> None:
    order = documented_order(ARCHITECTURE.read_text())
    assert order[0] == "cli" and order[-1] == "config"
    folders = {layer_of(m) for m in module_files() if layer_of(m)} - set(OUTSIDE.values())
    assert folders == set(order), "docs/architecture.md's layers and the folders differ"


def test_every_import_between_layers_goes_down_the_documented_order() -> None:
    wrong = upward_imports(import_graph(), documented_order(ARCHITECTURE.read_text()))
    assert not wrong, "\n".join(wrong)


def write_tree(root: Path, modules: dict[str, str]) -> dict[str, Path]:
    """Write `modules` ({dotted name: source}) as files under `root`: a package where another
    module's name starts with its own, else a plain module."""
    files = {}
    for name, source in modules.items():
        path = root.joinpath(*name.split("."))
        is_package = any(other.startswith(f"{name}.") for other in modules)
        path = path / "__init__.py" if is_package else path.with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        files[name] = path
    return files


ORDER = ["cli", "loop", "trial", "config"]
TREE = {  # a small studies package whose imports all go down, and trial.spec to test
    "regzoo.studies": "",
    "regzoo.studies._compat": "",
    "regzoo.studies.cli": "from regzoo.studies.config import y\n",
    "regzoo.studies.loop": "",
    "regzoo.studies.loop.study": "from regzoo.studies.trial.train import x\n",
    "regzoo.studies.trial": "",
    "regzoo.studies.trial.train": "from regzoo.studies.config import y\nfrom .spec import z\n",
    "regzoo.studies.config": "from regzoo.studies import _compat\n",
}


def test_a_tree_whose_imports_go_down_passes(tmp_path: Path) -> None:
    files = write_tree(tmp_path, {**TREE, "regzoo.studies.trial.spec": ""})
    graph = import_graph(files)
    assert graph["regzoo.studies.trial.train"] == {
        "regzoo.studies.config",
        "regzoo.studies.trial.spec",
    }
    assert upward_imports(graph, ORDER) == []


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("from regzoo.studies.loop.study import run_study", "regzoo.studies.loop.study"),
        ("import regzoo.studies.loop.study", "regzoo.studies.loop.study"),
        ("def f():\n    from ..loop import study", "regzoo.studies.loop.study"),  # in a function
        ("if TYPE_CHECKING:\n    from ..cli import main", "regzoo.studies.cli"),
        ("from regzoo.studies import run_study", "regzoo.studies"),  # the front
    ],
)
def test_an_upward_import_is_reported(tmp_path: Path, source: str, target: str) -> None:
    files = write_tree(tmp_path, {**TREE, "regzoo.studies.trial.spec": source + "\n"})
    wrong = upward_imports(import_graph(files), ORDER)
    assert len(wrong) == 1 and wrong[0].startswith(
        f"regzoo.studies.trial.spec (trial) imports {target} "
    )


def test_compat_importing_a_layer_is_reported(tmp_path: Path) -> None:
    tree = {
        **TREE,
        "regzoo.studies.trial.spec": "",
        "regzoo.studies._compat": "from . import config",
    }
    wrong = upward_imports(import_graph(write_tree(tmp_path, tree)), ORDER)
    assert wrong == ["regzoo.studies._compat imports regzoo.studies.config"]


def test_a_folder_the_order_does_not_list_is_reported(tmp_path: Path) -> None:
    files = write_tree(
        tmp_path,
        {
            **TREE,
            "regzoo.studies.scratch": "",
            "regzoo.studies.trial.spec": "from regzoo.studies.scratch import w\n",
        },
    )
    wrong = upward_imports(import_graph(files), ORDER)
    assert wrong == [
        "regzoo.studies.scratch: layer 'scratch' is not in the documented order",
        "regzoo.studies.trial.spec (trial) imports regzoo.studies.scratch (scratch), "
        "a layer above it",
    ]


def test_the_order_is_read_from_one_line_of_the_docs() -> None:
    text = "intro\n```\ncli  ->  results -> config\n```\n"
    assert documented_order(text) == ["cli", "results", "config"]
    with pytest.raises(AssertionError, match="one `cli"):
        documented_order("no order here")


@pytest.mark.parametrize(
    "module", ["regzoo.studies.cli.main", "regzoo.studies.executor.pool", "regzoo.studies.executor"]
)
def test_the_cli_and_the_worker_pool_import_no_torch(module: str) -> None:
    """`regzoo --help` answers at once, and `regzoo experiment` starts its workers before it
    imports torch (their imports overlap its own): neither may pull torch in by importing."""
    heavy = "('torch', 'lightning')"
    code = f"import sys, {module}; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
