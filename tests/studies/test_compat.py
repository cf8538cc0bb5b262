"""`studies/_compat.py`: each use of a dependency's private API, checked against the installed
version with real objects, and no such use anywhere else in regzoo.

A failure here names the behaviour an upgrade changed; fix `_compat.py`, not its callers.
"""

from __future__ import annotations

import ast
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from regzoo.studies._compat import (
    ASK_HEARTBEAT_WARNING,
    OPTIMIZE_LOGGER,
    early_stopping_check,
    fail_trial,
    failed_trial_number,
    member_heartbeats,
)
from regzoo.studies.loop.storage import open_storage
from tests.conftest import REPO

# The folders installed as `regzoo` (see pyproject.toml), and the files allowed private API: the
# studies' and the zoo's own (the zoo does not import the studies).
SOURCES = ("regzoo", "zoo", "datamodules", "studies")
COMPAT = REPO / "studies" / "_compat.py"
ZOO_COMPAT = REPO / "zoo" / "_compat.py"


class Collect(logging.Filter):
    """Keeps every record a logger handles (and lets none through to the terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@pytest.fixture
def optuna_records() -> Iterator[dict[str, Collect]]:
    """The real log records of Optuna's optimize loop and of its study module, INFO and up."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    collect = {name: Collect() for name in (OPTIMIZE_LOGGER, "optuna.study.study")}
    for name, collector in collect.items():
        logging.getLogger(name).addFilter(collector)
    try:
        yield collect
    finally:
        for name, collector in collect.items():
            logging.getLogger(name).removeFilter(collector)
        optuna.logging.set_verbosity(verbosity)


def boom(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    raise ValueError("boom")


def nan(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    return math.nan  # failed by Optuna itself, with a warning message and no exception


def interrupted(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0.0, 1.0)
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("objective", "error"), [(boom, ValueError), (nan, None), (interrupted, KeyboardInterrupt)]
)
def test_failed_trial_number_reads_both_of_optunas_failed_trial_records(
    optuna_records: dict[str, Collect],
    objective: Callable[[optuna.Trial], float],
    error: type[BaseException] | None,
) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)  # trial 0 completes
    if error is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=1)
    else:
        study.optimize(objective, n_trials=2, catch=(ValueError,))
    failed = [t.number for t in study.trials if t.state == TrialState.FAIL]
    assert failed == ([1] if error is KeyboardInterrupt else [1, 2])

    records = optuna_records[OPTIMIZE_LOGGER].records
    numbers = [failed_trial_number(r) for r in records]
    assert numbers == [n for n in failed for _ in range(2)], [r.getMessage() for r in records]
    # `results.console` reads the error of a failed trial (Ctrl-C among them) from its first
    # record, "Trial N failed with parameters: ...".
    for first in records[::2]:
        raised = first.exc_info[1] if first.exc_info else None
        assert type(raised) is error if error else raised is None
    # Records about other trials' outcomes are not failures.
    [completed] = optuna_records["optuna.study.study"].records
    assert "Trial 0 finished" in completed.getMessage()
    assert failed_trial_number(completed) is None


def test_failed_trial_number_is_none_for_a_pruned_trials_record(
    optuna_records: dict[str, Collect],
) -> None:
    def pruned(trial: optuna.Trial) -> float:
        raise optuna.TrialPruned("at epoch 3")

    optuna.create_study().optimize(pruned, n_trials=1)
    [record] = optuna_records[OPTIMIZE_LOGGER].records
    assert record.getMessage().startswith("Trial 0 pruned")
    assert failed_trial_number(record) is None
    unrelated = logging.LogRecord(OPTIMIZE_LOGGER, logging.WARNING, "", 0, "Trial", None, None)
    assert failed_trial_number(unrelated) is None


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


def test_early_stopping_check_applies_lightnings_patience_and_min_delta() -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    es = EarlyStopping(monitor="val/loss", patience=2, mode="min", min_delta=0.1, check_finite=True)
    # 1.0 sets the best; 0.95 is no improvement by min_delta; 0.85 improves; then two misses.
    stops = [early_stopping_check(es, v) for v in (1.0, 0.95, 0.85, 0.9, 0.8)]
    assert stops == [False, False, False, False, True]
    assert early_stopping_check(
        EarlyStopping(monitor="val/loss", patience=5, check_finite=True), math.nan
    )


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
    with member_heartbeats(study, trials):
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
