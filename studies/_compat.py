"""Every use of a dependency's private API, in one place.

Each function here relies on something its library does not promise; `tests/studies/
test_compat.py` checks each one against the installed version, so an upgrade that changes the
behaviour fails there, by name, instead of somewhere deep in a study.
"""

from __future__ import annotations

import logging
import re

import optuna
from optuna.trial import FrozenTrial, TrialState

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
