"""A study worker with a trivial objective, to test the trial budget with many real processes.

    python -m tests.studies._budget_worker URL TARGET

Each trial sleeps a little; trial 1 fails (a failed trial must be replaced, not counted).
"""

from __future__ import annotations

import sys
import time

import optuna

from regzoo.studies.executor.storage import open_storage
from regzoo.studies.loop.budget import TrialBudget

STUDY = "budget"
PAUSE_S = 0.3


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(PAUSE_S)
    if trial.number == 1:
        raise ValueError("trial 1 fails on purpose")
    return x


def main(url: str, target: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=STUDY, storage=open_storage(url))
    with TrialBudget(study, url, target, poll_s=0.1) as budget:
        if budget.claim():
            study.optimize(budget.wrap(objective), callbacks=[budget], catch=(ValueError,))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
