"""The reliability suite: faults injected into real studies, and a tally of what was injected.

Every fault is real (a signal sent to a process, a Lightning callback that raises, a damaged
file, a disk that is too full); the studies are tiny (`max_epochs=2`, a few batches). Each test
counts its injections in `tally`, and pytest prints the totals at the end of the run: the
figures of the README's Reliability section.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
from optuna.trial import TrialState

from regzoo.studies.loop.budget import FINISHED
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import train_run
from tests.conftest import DEFAULT_CONFIG, REPO, trials_folder

# Tiny trials: about a second each on one core.
TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu",
    "model.channels=[4, 8]",
    "model.hidden=[16]",
    "model.batchnorm=false",  # a diverging trial must be able to diverge
    "confirm=null",  # the default study's confirmation: tested on its own (tests/studies)
    # One trial per Trainer: the faults land on a worker training its trial; the tests that
    # inject them into a population set `population` themselves.
    "population.size=1",
]
# A trial that trains until it is stopped: the target of a signal.
ENDLESS = ["trainer.max_epochs=100000", "early_stopping=null", "pruner.name=none"]
STUDY = "cnn-digits"  # the default config's name

_INJECTED: Counter[str] = Counter()
_TRIALS: Counter[str] = Counter()


class Tally:
    """What one test injected, and how many trials the studies around the faults ran."""

    def inject(self, fault: str, times: int = 1) -> None:
        _INJECTED[fault] += times

    def trials(self, fault: str, count: int) -> None:
        _TRIALS[fault] += count


@pytest.fixture(scope="session")  # stateless: hypothesis tests share it safely
def tally() -> Tally:
    return Tally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _INJECTED:
        return
    terminalreporter.section("reliability: faults injected (nothing lost: each test asserts it)")
    for fault, times in sorted(_INJECTED.items()):
        trials = f", {_TRIALS[fault]} trial(s) in the studies around it" if _TRIALS[fault] else ""
        terminalreporter.write_line(f"{fault}: injected {times}x{trials}")


def train_with(*extra: L.Callback, only: str | None = None) -> Callable[..., RunResult]:
    """`train_run` with `extra` Lightning callbacks in every trial, or in trial `only` alone."""

    def train(spec: TrialSpec, **kw: Any) -> RunResult:
        if only is None or spec.run_name == only:
            kw["callbacks"] = [*(kw.get("callbacks") or []), *extra]
        return train_run(spec, **kw)

    return train


def as_sets(overrides: list[str]) -> list[str]:
    return [f"--set={o}" for o in overrides]


def run_command(url: str, trials: int, *extra: str) -> list[str]:
    """`regzoo run` on the default config, quiet, into `url`."""
    return [
        sys.executable, "-m", "regzoo", "run", str(DEFAULT_CONFIG), "--storage", url,
        "--trials", str(trials), "--wandb", "disabled", "--no-progress", *extra,
    ]  # fmt: skip


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout importable, one torch thread each."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def load(url: str, name: str = STUDY) -> optuna.Study:
    from regzoo.studies.executor.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen[str] | None, what: str, timeout: float
) -> None:
    """Poll until `condition()` holds; fail if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.2)


def running_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    """The study's running trials that have sampled their parameters (training has begun)."""
    from regzoo.studies.executor.storage import open_storage

    storage = open_storage(url)
    if STUDY not in optuna.get_all_study_names(storage=storage):
        return []
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.params]


def child_pids(pid: int) -> set[int]:
    """The processes `pid` started that are still alive (its worker processes among them)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.update(int(c) for c in (task / "children").read_text().split())
        except OSError:  # the thread (or the process) is gone
            continue
    return children


def worker_pids(pid: int) -> set[int]:
    """The worker processes a `regzoo run` (pid) spawned: its children that multiprocessing's
    spawn started (not its resource tracker)."""
    workers = set()
    for child in child_pids(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(child)
        except OSError:  # gone meanwhile
            continue
    return workers


def trained_by(trial: optuna.trial.FrozenTrial) -> int:
    """The pid of the process that trained (or trains) `trial`: its `worker` attr, host:pid."""
    from regzoo.studies.executor.trials import WORKER_ATTR, worker_id

    host, _, pid = str(trial.user_attrs[WORKER_ATTR]).rpartition(":")
    assert host == worker_id().rpartition(":")[0], trial.user_attrs[WORKER_ATTR]
    return int(pid)


def assert_nothing_lost(trials: list[optuna.trial.FrozenTrial], target: int, runs: Path) -> None:
    """`target` trials finished, numbers unique, none left running, each one's results on disk."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), numbers
    assert sum(t.state in FINISHED for t in trials) == target
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state in FINISHED:
            assert (trials_folder(runs / STUDY) / f"trial-{t.number}" / "metrics.csv").is_file(), (
                t.number
            )
