"""Every use of a dependency's private API, in one place.

Each function here relies on something its library does not promise; `tests/studies/
test_compat.py` checks each one against the installed version, so an upgrade that changes the
behaviour fails there, by name, instead of somewhere deep in a study.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState


def fail_trial(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Mark another process's RUNNING trial FAIL, as a stale heartbeat would; False when it had
    finished meanwhile. Optuna's public API only finishes the trials of this process."""
    try:
        return bool(study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def trial_by_number(study: optuna.Study, number: int) -> optuna.Trial:
    """Trial `number` of `study` as a `Trial` to report to, prune and tell, in a process other
    than the one that asked it (an executor's worker). Optuna's public API gives a `Trial` only
    to the process that asks it; its constructor takes the storage's private trial id."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


# `Study.ask` warns that heartbeats are meant for `Study.optimize`: a population asks its
# members itself and records their heartbeats with `member_heartbeats`.
ASK_HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


@contextmanager
def member_heartbeats(
    study: optuna.Study, asked: Callable[[], Iterable[optuna.Trial]]
) -> Iterator[None]:
    """Record the heartbeats of the trials `asked()` gives (those of `study`) while the block
    runs, as `Study.optimize` does for its one trial (RDB storages with a heartbeat interval;
    otherwise nothing), so that other processes do not fail them as stale while they wait for
    a worker or train in one."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        yield
        return
    interval = storage.get_heartbeat_interval()
    assert interval is not None
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in list(asked()):
                if trial.study.study_name == study.study_name:
                    with contextlib.suppress(Exception):  # told meanwhile: nothing to keep
                        storage.record_heartbeat(trial._trial_id)
            if stop.wait(timeout=interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="regzoo-member-heartbeats")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
