"""Shared fixtures: tiny real trainers and isolated run directories, never mocks."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from optuna.trial import FrozenTrial

from regzoo.studies.trial.spec import TrialSpec

# W&B must never prompt or reach the network from a test.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)

# Ctrl-C is under test (tests/reliability, benchmarks): a suite started in the background of a
# non-interactive shell inherits SIGINT as ignored, and so would every study process it starts.
# Python's own handler here gives in-process tests KeyboardInterrupt and their children SIG_DFL.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "studies" / "configs" / "default.yaml"

pytest_plugins = ("tests._postgres",)  # postgres_server, postgres_url: a throwaway server


@pytest.fixture
def tiny_trainer_kwargs() -> dict[str, object]:
    """A real Trainer shrunk to seconds: one epoch, two batches, no files."""
    return {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
        "accelerator": "cpu",
    }


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from a temporary directory so runs/ and data/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _seed() -> None:
    L.seed_everything(0, verbose=False)


def trials_folder(study_dir: Path) -> Path:
    """The one `<study id>/` folder under `runs_dir/<study>/` that holds a study's trial folders
    (`regzoo train` runs sit beside it as `train-<n>/`)."""
    [folder] = [p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith("train-")]
    return folder


# Trial attributes that differ between two runs of the same trials: the clock, the pid, the
# run's own folder.
MEASURED = {"seconds", "worker", "checkpoint"}


def reproducible(trials: Iterable[FrozenTrial]) -> list[dict[str, Any]]:
    """What two runs of the same trials must share: everything but `MEASURED`."""
    return [
        {
            "number": t.number,
            "state": t.state,
            "params": t.params,
            "value": t.value,
            "attrs": {k: v for k, v in t.user_attrs.items() if k not in MEASURED},
            "intermediate": t.intermediate_values,
        }
        for t in trials
    ]


def spec_of(
    cfg: Any, run_dir: Path, *, params: dict[str, Any] | None = None, seed: int | None = None
) -> TrialSpec:
    """A plain run of `cfg` (no Optuna trial) into `run_dir`, as `regzoo train` makes one."""
    return TrialSpec(cfg, params or {}, run_dir, cfg.seed if seed is None else seed, "train")
