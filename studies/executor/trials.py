"""Where a run finds its Optuna trial: the asker's own `Trial` object in the process that asked
it, else the trial opened again by its address (`TrialRef`) in a worker process."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial

from regzoo.studies._compat import trial_by_number
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.executor.samplers import make_pruner
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.trial.lifecycle import error_text, record, tell
from regzoo.studies.trial.spec import RunResult, TrialRef

StudyKey = tuple[str, str]  # (storage URL, study name)
WORKER_ATTR = "worker"  # "host:pid" of the process training the trial


class Trials:
    """The trials and studies this process has open, by address."""

    def __init__(self) -> None:
        self._studies: dict[StudyKey, optuna.Study] = {}
        self._trials: dict[TrialRef, optuna.Trial] = {}

    def add(self, ref: TrialRef, trial: optuna.Trial) -> None:
        """A trial this process asked: runs here use this very object."""
        self._trials[ref] = trial
        self._studies.setdefault((ref.storage, ref.study), trial.study)

    def get(self, ref: TrialRef | None, cfg: StudyConfig) -> optuna.Trial | None:
        """The trial at `ref` (None for None), with the pruner `cfg` names."""
        if ref is None:
            return None
        if ref not in self._trials:  # a worker's: the process that trains it is this one
            trial = trial_by_number(self._study(ref, cfg), ref.number)
            trial.set_user_attr(WORKER_ATTR, worker_id())
            self._trials[ref] = trial
        return self._trials[ref]

    def asked(self) -> list[optuna.Trial]:
        """The trials this process asked and has not forgotten."""
        return list(self._trials.values())

    def forget(self, refs: list[TrialRef | None]) -> None:
        """Drop finished trials (a long study asks many)."""
        for ref in refs:
            if ref is not None:
                self._trials.pop(ref, None)

    def _study(self, ref: TrialRef, cfg: StudyConfig) -> optuna.Study:
        key = (ref.storage, ref.study)
        if key not in self._studies:
            self._studies[key] = optuna.load_study(
                study_name=ref.study, storage=open_storage(ref.storage), pruner=make_pruner(cfg)
            )
        return self._studies[key]


def worker_id() -> str:
    """This process, as a trial's `WORKER_ATTR` records it: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def died_here(trial: FrozenTrial) -> bool:
    """True for a running trial whose worker was a process of this machine that is gone."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def fail_untold(trials: Trials) -> Iterator[None]:
    """On an exception (Ctrl-C included), fail every trial asked here that no run told: they
    were waiting for a job that never ran, or their job broke before their lifecycle began."""
    try:
        yield
    except BaseException as exc:
        result = RunResult("failed", [float("nan")], 0.0, 0, error=error_text(exc))
        for trial in trials.asked():
            stored = trial.study.get_trials(deepcopy=False)[trial.number]
            if not stored.state.is_finished():
                with contextlib.suppress(RuntimeError):  # told by its worker meanwhile
                    record(trial, result, {})
                tell(trial, result)
        raise
