"""`studies/_compat.py`: each use of a dependency's private API, checked against the installed
version with real objects, and no such use anywhere else in regzoo: neither a private name read
nor a private method overridden in a subclass.

A failure here names the behaviour an upgrade changed; fix `_compat.py`, not its callers.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from regzoo.studies._compat import (
    ASK_HEARTBEAT_WARNING,
    fail_trial,
    member_heartbeats,
    trial_by_number,
)
from regzoo.studies.executor.storage import open_storage
from tests.conftest import REPO
from tests.test_imports import module_files

# The folders installed as `regzoo` (see pyproject.toml), and the files allowed private API: the
# studies' and the zoo's own (the zoo does not import the studies).
SOURCES = ("regzoo", "zoo", "datamodules", "studies")
COMPAT = REPO / "studies" / "_compat.py"
ZOO_COMPAT = REPO / "zoo" / "_compat.py"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() on it
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trial_by_number_reports_prunes_and_tells_another_processs_trial(
    kind: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'j'}"
    asker = optuna.create_study(
        study_name="s", storage=open_storage(url), pruner=optuna.pruners.NopPruner()
    )
    asker.ask()
    asked = asker.ask()  # trial 1, as a worker process gets it: by number, on its own connection
    worker = optuna.load_study(study_name="s", storage=open_storage(url))
    trial = trial_by_number(worker, 1)
    assert isinstance(trial, optuna.Trial) and trial.number == asked.number
    trial.report(0.5, step=0)
    trial.set_user_attr("label", "worker's")
    assert trial.should_prune() is False
    worker.tell(trial, 0.75)
    [stored] = [t for t in asker.get_trials() if t.number == 1]
    assert stored.state == TrialState.COMPLETE and stored.value == 0.75
    assert stored.intermediate_values == {0: 0.5} and stored.user_attrs == {"label": "worker's"}
    assert asker.get_trials()[0].state == TrialState.RUNNING  # trial 0 untouched


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() on it
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_fail_trial_fails_another_processs_running_trial_once(kind: str, tmp_path: Path) -> None:
    url = f"{kind}:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="compat", storage=open_storage(url))
    running = study.ask()
    running.suggest_float("x", 0.0, 1.0)
    done = study.ask()
    study.tell(done, 1.0)
    # Another process's view of the study, as `loop.budget` has of a dead worker's trial.
    other = optuna.load_study(study_name="compat", storage=open_storage(url))
    [frozen] = other.get_trials(states=(TrialState.RUNNING,))
    assert frozen.number == running.number

    assert fail_trial(other, frozen) is True
    reread = optuna.load_study(study_name="compat", storage=open_storage(url)).trials
    assert [t.state for t in reread] == [TrialState.FAIL, TrialState.COMPLETE]
    assert reread[0].params == frozen.params  # only the state changed
    assert fail_trial(other, frozen) is False  # finished meanwhile: UpdateFinishedTrialError
    [complete] = other.get_trials(states=(TrialState.COMPLETE,))
    assert fail_trial(other, complete) is False
    assert [t.state for t in other.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def private_uses(path: Path) -> list[str]:
    """`obj._name` on anything but `self`/`cls`, `getattr(obj, "_name")`, and private modules
    or names imported from other packages than regzoo."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{where} {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            found.append(f"{where} {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "__future__" or node.module.split(".")[0] == "regzoo":
                continue
            names = [*node.module.split("."), *(a.name for a in node.names)]
            if any(is_private(n) for n in names):
                found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "regzoo" and any(
                    is_private(n) for n in alias.name.split(".")
                ):
                    found.append(f"{where} import {alias.name}")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_overrides(path: Path, module: ModuleType, root: Path = REPO) -> list[str]:
    """Private names that a class in `path` defines in its body and that a class it inherits
    from outside `module` and regzoo also has: an override of a dependency's private API, which
    `private_uses` cannot see (it is `def _name`, not `obj._name`). `module` is `path` imported:
    each base is looked up in its namespace, so a third-party class reached through a regzoo
    base counts too. A base not found there (imported inside a function) is reported as such,
    rather than passed over unchecked."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ClassDef):
            continue
        where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
        theirs: list[type] = []
        for base in node.bases:
            klass = resolve(base, vars(module))
            if not isinstance(klass, type):
                found.append(f"{where}: base {ast.unparse(base)} not found in the module")
                continue
            theirs += [
                c
                for c in klass.__mro__
                if c.__module__ != module.__name__ and c.__module__.split(".")[0] != "regzoo"
            ]
        for name, line in defined_names(node):
            if is_private(name) and (owner := next((c for c in theirs if name in vars(c)), None)):
                found.append(
                    f"{path.relative_to(root)}:{line} {node.name}.{name} overrides "
                    f"{owner.__qualname__}.{name}"
                )
    return found


def resolve(expr: ast.expr, namespace: dict[str, Any]) -> object:
    """The object a base-class expression names in `namespace` (or among the builtins): `Name`,
    `a.b.Name` or a parametrized `Name[...]`; None for anything else or a name not found."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id, getattr(builtins, expr.id, None))
    if isinstance(expr, ast.Attribute):
        return getattr(resolve(expr.value, namespace), expr.attr, None)
    if isinstance(expr, ast.Subscript):
        return resolve(expr.value, namespace)
    return None


def defined_names(node: ast.ClassDef) -> Iterator[tuple[str, int]]:
    """The names a class body binds: its methods and its class attributes, with their lines."""
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield stmt.name, stmt.lineno
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    yield target.id, stmt.lineno


def test_member_heartbeats_keep_asked_trials_fresh_and_ask_still_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGZOO_HEARTBEAT_S", "1")
    monkeypatch.setenv("REGZOO_GRACE_S", "2")
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    study = optuna.create_study(storage=storage)
    with pytest.warns(UserWarning, match=ASK_HEARTBEAT_WARNING):
        trials = [study.ask(), study.ask()]
    ids = {t._trial_id for t in trials}
    with member_heartbeats(study, lambda: trials):
        time.sleep(3)  # longer than the grace period: only the beats keep them fresh
        assert not ids & set(storage._get_stale_trial_ids(study._study_id))
    time.sleep(3)  # the beats have stopped with the block
    assert ids <= set(storage._get_stale_trial_ids(study._study_id))


def test_no_private_api_outside_the_compat_module() -> None:
    files = [p for d in SOURCES for p in sorted((REPO / d).rglob("*.py"))]
    assert COMPAT in files and ZOO_COMPAT in files and len(files) > 20
    assert private_uses(COMPAT) and private_uses(ZOO_COMPAT)  # the check finds what it looks for
    found = [use for p in files if p not in (COMPAT, ZOO_COMPAT) for use in private_uses(p)]
    assert found == [], "move these into studies/_compat.py or zoo/_compat.py:\n" + "\n".join(found)


OVERRIDES = """
import albumentations as A
from torch import nn
from torch.utils.data import Dataset


class Shifted(A.Affine):
    def _get_translate_params(self, image_shape):  # albumentations' own: an override
        return {"x": 0.5, "y": 0.5}

    def _draw(self):  # a name of its own: not an override
        return 0

    def __repr__(self):  # a dunder: public protocol
        return "Shifted()"

    def get_params_dependent_on_data(self, params, data):  # public hook
        return super().get_params_dependent_on_data(params, data)


class Sheared(Shifted):
    _draw = None  # its own base's name, not albumentations'

    def _get_shear_params(self):  # albumentations' again, reached through Shifted
        return {"x": 0.0, "y": 0.0}


class Items(Dataset[int]):
    _is_protocol = True  # on typing.Generic, through the parametrized base


def build():
    from torch.nn import Linear

    class Local(nn.Module):
        def _apply(self, fn, recurse=True):  # torch's, in a class inside a function
            return self

    class Wide(Linear):  # a base imported in the function: unchecked, so reported
        pass

    return Local, Wide
"""


def test_private_overrides_finds_a_subclass_overriding_a_dependencys_private_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI otherwise
    path = tmp_path / "pkg" / "overrides.py"
    path.parent.mkdir()
    path.write_text(OVERRIDES)
    spec = importlib.util.spec_from_file_location("overrides", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert private_overrides(path, module, tmp_path) == [
        "pkg/overrides.py:8 Shifted._get_translate_params overrides Affine._get_translate_params",
        "pkg/overrides.py:24 Sheared._get_shear_params overrides Affine._get_shear_params",
        "pkg/overrides.py:29 Items._is_protocol overrides Generic._is_protocol",
        "pkg/overrides.py:36 Local._apply overrides Module._apply",
        "pkg/overrides.py:39 Wide: base Linear not found in the module",
    ]


def test_no_private_method_overridden_outside_the_compat_modules() -> None:
    modules = {p: name for name, p in module_files().items() if p not in (COMPAT, ZOO_COMPAT)}
    assert len(modules) > 20
    found = [
        use
        for p, name in modules.items()
        for use in private_overrides(p, importlib.import_module(name))
    ]
    assert found == [], "move these into a _compat.py module:\n" + "\n".join(found)
