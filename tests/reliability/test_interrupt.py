"""Ctrl-C: the running trial is recorded (failed), never left running; rerunning resumes.

A real SIGINT each time: sent by a Lightning callback to its own process at one stage of a
trial (in-process, every stage), or sent to a `regzoo run` process while its trial
is running in the storage (alone, and as a terminal would: to the whole process group of a
`--workers 2` run, the study's process and the two worker processes it spawned, once each
worker trains a trial).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies import load_config, run_study
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import (
    ENDLESS,
    TINY,
    Tally,
    as_sets,
    assert_nothing_lost,
    child_pids,
    cli_env,
    load,
    run_command,
    running_trials,
    train_with,
    trained_by,
    wait_for,
)

STAGES = ("setup", "on_train_batch_start", "on_validation_end", "on_test_start")


class SigintAt(L.Callback):
    """Send this process a real SIGINT when the trial reaches `stage` (once)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.sent = False

    def _hit(self, stage: str) -> None:
        if stage == self.stage and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._hit("setup")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            self._hit("on_train_batch_start")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hit("on_validation_end")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hit("on_test_start")


def test_sigint_at_each_stage_fails_that_trial_and_each_rerun_resumes(
    tmp_path: Path, tally: Tally
) -> None:
    """One study, interrupted at each stage in turn and rerun after each: nothing is lost."""
    overrides = [*TINY, f"runs_dir={tmp_path / 'runs'}", "pruner.name=none"]  # reach each stage
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    quiet: dict[str, Any] = {"show_progress": False, "wandb": "disabled", "console": _silent()}
    for number, stage in enumerate(STAGES):
        injected = SigintAt(stage)
        with pytest.raises(KeyboardInterrupt):
            run_study(cfg, storage=url, trials=2, train=train_with(injected), **quiet)
        tally.inject("SIGINT (Ctrl-C) during a trial")
        assert injected.sent
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again
        trials = load(url).trials
        assert [t.state for t in trials] == [TrialState.FAIL] * (number + 1), stage
        assert trials[-1].user_attrs["error"] == "interrupted (Ctrl-C / SIGINT)"
    interrupted = load(url).trials
    run_study(cfg, storage=url, trials=2, **quiet)  # the last rerun finishes the study
    trials = load(url).trials
    assert trials[: len(STAGES)] == interrupted
    assert_nothing_lost(trials, 2, tmp_path / "runs")
    tally.trials("SIGINT (Ctrl-C) during a trial", len(trials))


class SendsSigintWhenFinalized:
    """Sends this process a real SIGINT from its `__del__`, so the handler runs inside a
    finalizer, as when garbage collection finalizes Lightning's `Profiler`."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundary: still in here
            pass


class SigintInFinalizerAt(SigintAt):
    def _hit(self, stage: str) -> None:
        if stage == self.stage and not self.sent:
            self.sent = True
            SendsSigintWhenFinalized()  # dropped at once: its __del__ runs here

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hit("on_test_end")


@pytest.mark.parametrize(
    ("stage", "state"),
    [("on_train_batch_start", TrialState.FAIL), ("on_test_end", TrialState.COMPLETE)],
)
def test_a_sigint_dropped_in_a_finalizer_still_stops_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Tally, stage: str, state: TrialState
) -> None:
    """Python drops ("Exception ignored") a KeyboardInterrupt raised in a finalizer; the study
    used to go on and ignore every later Ctrl-C. It stops at the next batch or after the trial."""
    dropped: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: dropped.append(info.exc_type))
    overrides = [*TINY, f"runs_dir={tmp_path / 'runs'}", "pruner.name=none"]
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    quiet: dict[str, Any] = {"show_progress": False, "wandb": "disabled", "console": _silent()}
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, storage=url, trials=3, train=train_with(SigintInFinalizerAt(stage)), **quiet)
    assert dropped == [KeyboardInterrupt]  # the finalizer did swallow it
    tally.inject("SIGINT swallowed by a finalizer")
    trials = load(url).trials
    assert [t.state for t in trials] == [state]  # the first trial was the last
    if state == TrialState.FAIL:
        assert trials[0].user_attrs["error"] == "interrupted (Ctrl-C / SIGINT)"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again


def _silent() -> Console:
    return Console(file=io.StringIO())


def interrupt_a_running_study(
    cwd: Path, url: str, extra: list[str], *, group: bool, workers_train: bool = True
) -> subprocess.CompletedProcess[str]:
    """Start `run` on endless trials, SIGINT it once a trial is running; its exit and output.

    With `--workers 2` the study's process asks two trials and hands them to the two worker
    processes it spawned: the SIGINT comes once each worker trains one (`workers_train`), or as
    soon as both are asked, while the workers may still be starting (importing torch)."""
    command = run_command(url, 3, *as_sets([*TINY, *ENDLESS]), *extra)
    proc = subprocess.Popen(
        command, cwd=cwd, env=cli_env(), text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    workers = 2 if "--workers" in extra else 1

    def trials_run() -> bool:
        running = running_trials(url)
        if workers > 1 and workers_train:  # trained by worker processes of the study's
            return len({trained_by(t) for t in running} & child_pids(proc.pid)) == workers
        return len(running) == workers

    wait_for(trials_run, proc, "trials run", timeout=120)
    if group:  # what the terminal does on Ctrl-C: every process of the foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def assert_interrupted_then_resumed(cwd: Path, url: str, done: Any, extra: list[str]) -> None:
    assert done.returncode == 130, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), done.stderr
    interrupted = load(url).trials
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    rerun = subprocess.run(
        run_command(url, 3, *as_sets(TINY), *extra),
        cwd=cwd, env=cli_env(), text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    trials = load(url).trials
    assert trials[: len(interrupted)] == interrupted
    assert_nothing_lost(trials, 3, cwd / "runs")


def test_ctrl_c_on_a_study_exits_130_with_one_line_and_a_rerun_resumes(
    in_tmp: Path, tally: Tally
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    done = interrupt_a_running_study(in_tmp, url, [], group=False)
    tally.inject("SIGINT (Ctrl-C) to a `studies run` process")
    assert_interrupted_then_resumed(in_tmp, url, done, [])
    tally.trials("SIGINT (Ctrl-C) to a `studies run` process", len(load(url).trials))


@pytest.mark.slow  # ~40 s each: three processes start, twice
@pytest.mark.parametrize("workers_train", [True, False], ids=["training", "starting"])
def test_ctrl_c_on_two_workers_fails_both_trials_and_a_rerun_resumes(
    in_tmp: Path, tally: Tally, workers_train: bool
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    workers = ["--workers", "2"]
    done = interrupt_a_running_study(in_tmp, url, workers, group=True, workers_train=workers_train)
    tally.inject("SIGINT (Ctrl-C) to a `studies run` process", 3)  # parent and both workers
    assert_interrupted_then_resumed(in_tmp, url, done, workers)
    tally.trials("SIGINT (Ctrl-C) to a `studies run` process", len(load(url).trials))
