"""Every use of a dependency's private API, in one place.

Each function here relies on something its library does not promise; `tests/studies/
test_compat.py` checks each one against the installed version, so an upgrade that changes the
behaviour fails there, by name, instead of somewhere deep in a study.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import EarlyStopping

# Optuna logs "Trial 7 failed with parameters: ..." (with the exception) and then
# "Trial 7 failed with value None." from `optuna.study._optimize`; no public hook says which
# trial a log record is about.
OPTIMIZE_LOGGER = "optuna.study._optimize"
_FAILED_TRIAL = re.compile(r"Trial (\d+) failed with ")


def failed_trial_number(record: logging.LogRecord) -> int | None:
    """The trial number of one of Optuna's "Trial N failed with ..." log records, else None."""
    match = _FAILED_TRIAL.match(str(record.msg))
    return int(match.group(1)) if match else None


def fail_trial(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Mark another process's RUNNING trial FAIL, as a stale heartbeat would; False when it had
    finished meanwhile. Optuna's public API only finishes the trials of this process."""
    try:
        return bool(study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def early_stopping_check(callback: EarlyStopping, value: float) -> bool:
    """Lightning's `EarlyStopping` criteria (patience, min_delta, mode, check_finite) applied to
    one value, outside a Trainer: True when the callback would stop. A population keeps one
    callback per member (`regzoo.studies.population`), each fed its own member's metric."""
    import torch

    should_stop, _reason = callback._evaluate_stopping_criteria(torch.tensor(float(value)))
    return bool(should_stop)


# `Study.ask` warns that heartbeats are meant for `Study.optimize`: a population asks its
# members itself and records their heartbeats with `member_heartbeats`.
ASK_HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


@contextmanager
def member_heartbeats(study: optuna.Study, trials: list[optuna.Trial]) -> Iterator[None]:
    """Record the heartbeats of asked trials while the block runs, as `Study.optimize` does for
    its one trial (RDB storages with a heartbeat interval; otherwise nothing), so that other
    workers do not fail a population's running members as stale."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if not trials or not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        yield
        return
    interval = storage.get_heartbeat_interval()
    assert interval is not None
    ids = [t._trial_id for t in trials]
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            if stop.wait(timeout=interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="regzoo-member-heartbeats")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
