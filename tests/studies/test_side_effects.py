"""Library calls leave the process as they found it: a study run in-process (as a notebook
runs one) changes no logging level, warning filter, garbage-collector state, signal handler or
environment variable. Process-wide settings are the `regzoo` command's, made at its entry."""

from __future__ import annotations

import gc
import logging
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import optuna

from regzoo.studies import load_config, run_study
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import TINY

LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "optuna")


def process_state() -> dict[str, Any]:
    return {
        "levels": {name: logging.getLogger(name).level for name in LOGGERS},
        "filters": {name: list(logging.getLogger(name).filters) for name in LOGGERS},
        "optuna verbosity": optuna.logging.get_verbosity(),
        "warning filters": list(warnings.filters),
        "gc frozen": gc.get_freeze_count(),
        "gc enabled": gc.isenabled(),
        "SIGINT": signal.getsignal(signal.SIGINT),
        # WANDB_SERVICE is wandb's own: the service process it keeps for this process's next run.
        "environment": {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
    }


def test_run_study_leaves_the_process_as_it_found_it(in_tmp: Path) -> None:
    cfg = load_config(DEFAULT_CONFIG, overrides=[*TINY, f"runs_dir={in_tmp / 'runs'}"])
    gc.unfreeze()
    before = process_state()
    outcome = run_study(
        cfg,
        storage=f"sqlite:///{in_tmp / 'studies.db'}",
        trials=2,
        wandb="offline",  # W&B's run settings, not WANDB_* variables
        show_progress=False,
    )
    assert len(outcome.study.trials) == 2
    after = process_state()
    for key, value in before.items():
        assert after[key] == value, key
