"""Faults inside one trial: a diverging loss, an exception (out of memory). The study goes on.

Real trainings: the diverging trials use a learning rate of 1e9 or weights drawn with a
standard deviation of 1e30 (a learning rate of 50 only takes this loss to about 1e26, still
finite); the out-of-memory error is raised by a Lightning callback in the middle of one trial's
training, where CUDA's allocator would raise it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies import load_config, open_study, run_study
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import TINY, Tally, assert_nothing_lost, load, train_with

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (injected by the reliability suite)"


def tiny_study(tmp_path: Path, *overrides: str) -> tuple[Any, str]:
    cfg = load_config(
        DEFAULT_CONFIG,
        overrides=[*TINY, f"runs_dir={tmp_path / 'runs'}", "pruner.name=none", *overrides],
    )
    return cfg, f"sqlite:///{tmp_path / 'studies.db'}"


def run(cfg: Any, url: str, trials: int, **kw: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200)
    run_study(cfg, storage=url, trials=trials, wandb="disabled", console=console, **kw)
    return out.getvalue()


def test_a_diverging_trial_fails_with_the_reason_and_the_study_goes_on(
    tmp_path: Path, tally: Tally
) -> None:
    lr = "model.lr: {float: [1.0e-3, 1.0e+10], log: true}"
    std = "model.init_std: {float: [1.0e-3, 1.0e+31], log: true}"
    cfg, url = tiny_study(
        tmp_path, f"search={{{lr}, {std}}}", "model.optimizer=momentum", "model.init=normal"
    )
    study = open_study(cfg, url)
    fine = {"model.lr": 0.05, "model.init_std": 0.05}
    for params in (fine, {**fine, "model.lr": 1.0e9}, {**fine, "model.init_std": 1.0e30}):
        study.enqueue_trial(params)
    for _ in range(2):
        study.enqueue_trial(fine)
    out = run(cfg, url, 3)  # the objective is val/acc, which stays finite as the loss diverges
    tally.inject("loss NaN/inf (lr=1e9, init_std=1e30)", 2)
    trials = load(url).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]  # fmt: skip
    for failed in trials[1:3]:
        error = failed.user_attrs["error"]
        assert error.startswith(("non-finite val/loss", "non-finite train/loss")), error
        assert f"error: {error}" in out
        assert "test/acc" not in failed.user_attrs  # a diverged model is never tested
    assert_nothing_lost(trials, 3, tmp_path / "runs")
    assert "Traceback" not in out
    tally.trials("loss NaN/inf (lr=1e9, init_std=1e30)", len(trials))


class OutOfMemoryAt(L.Callback):
    """Raise torch's out-of-memory error at a training batch, as CUDA's allocator would."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            raise torch.OutOfMemoryError(OOM)


def test_an_exception_in_one_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path, tally: Tally
) -> None:
    cfg, url = tiny_study(tmp_path)
    out = run(cfg, url, 2, train=train_with(OutOfMemoryAt(), only="trial-1"))
    tally.inject("exception in a trial (CUDA out of memory)")
    trials = load(url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["error"] == f"OutOfMemoryError: {OOM}"
    assert f"trial   1 fail     error: OutOfMemoryError: {OOM}" in out
    assert_nothing_lost(trials, 2, tmp_path / "runs")
    tally.trials("exception in a trial (CUDA out of memory)", len(trials))


@pytest.fixture(autouse=True)
def _quiet_optuna_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="optuna")
