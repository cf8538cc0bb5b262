"""Ctrl-C and SIGKILL in the middle of `regzoo confirm`: the runs finished before are kept, the
study's verdict is never half-recorded, and the same command trains only the rest.

A real `regzoo confirm` process on a prepared tiny study whose runs take a few seconds; the
signal is sent once the companion `<study>.seeds` holds a complete run and the next one is
running (polled in the SQLite storage).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo.studies import load_config, run_study
from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.verdicts.commands import confirm_study
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import STUDY, TINY, Tally, cli_env, load, wait_for

# A few seconds a run: long enough for a signal to land in one, short enough to rerun them.
MAX_EPOCHS = 100
SLOW_RUNS = [*TINY, f"trainer.max_epochs={MAX_EPOCHS}", "early_stopping=null", "pruner.name=none"]
COMPANION = f"{STUDY}.seeds"


def prepare(tmp: Path) -> str:
    """A finished one-trial study; its storage URL."""
    url = f"sqlite:///{tmp / 'studies.db'}"
    cfg = load_config(DEFAULT_CONFIG, overrides=[*SLOW_RUNS, f"runs_dir={tmp / 'runs'}"])
    run_study(cfg, storage=url, trials=1, show_progress=False, wandb="disabled", console=silent())
    return url


def silent() -> Console:
    return Console(file=io.StringIO())


def runs(url: str) -> list[FrozenTrial]:
    storage = open_storage(url)
    if COMPANION not in optuna.get_all_study_names(storage=storage):
        return []
    return optuna.load_study(study_name=COMPANION, storage=storage).get_trials()


def in_state(trials: list[FrozenTrial], state: TrialState) -> list[FrozenTrial]:
    return [t for t in trials if t.state == state]


def confirm_args(url: str, seeds: int) -> list[str]:
    """One run per Trainer, so that a run completes while the next one trains (a population's
    members would end together: tests/reliability/test_population_faults.py has those)."""
    return [
        "confirm",
        STUDY,
        "--top",
        "1",
        "--seeds",
        str(seeds),
        "--storage",
        url,
        "--population",
        "1",
    ]


def signal_mid_run(
    tmp: Path, url: str, seeds: int, sig: signal.Signals, *, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[FrozenTrial]]:
    """Start `regzoo confirm`; once a new run completed and the next one trains (MAX_EPOCHS
    epochs: seconds still to go), send `sig`. Its exit, and the runs complete after."""
    complete_before = len(in_state(runs(url), TrialState.COMPLETE))
    command = [sys.executable, "-m", "regzoo", *confirm_args(url, seeds), "--wandb", "disabled"]
    proc = subprocess.Popen(
        command, cwd=tmp, env=cli_env(**(env or {})), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    storage = open_storage(url)
    companion: list[optuna.Study] = []  # loaded once it exists

    def mid_run() -> bool:
        if not companion:
            if COMPANION not in optuna.get_all_study_names(storage=storage):
                return False
            companion.append(optuna.load_study(study_name=COMPANION, storage=storage))
        trials = companion[0].get_trials()
        done = len(in_state(trials, TrialState.COMPLETE)) > complete_before
        return done and bool(in_state(trials, TrialState.RUNNING))  # a run reports no epochs

    wait_for(mid_run, proc, "a run completes and the next one trains", 180)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(command, proc.returncode, out, err)
    return done, in_state(runs(url), TrialState.COMPLETE)


def rerun(url: str, seeds: int) -> tuple[int, str]:
    """The same command again, in this process, to the end."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([*confirm_args(url, seeds), "--wandb", "disabled"])
    return code, out.getvalue()


def assert_complete_confirmation(url: str, seeds: int, before: list[FrozenTrial]) -> None:
    """The `confirm` attr names `seeds` runs, each one complete run, and the runs complete
    before are among them, untouched."""
    recorded = json.loads(load(url).user_attrs["confirm"])
    assert len(recorded["seeds"]) == seeds
    (fingerprints,) = recorded["runs"].values()
    assert len(fingerprints) == seeds
    trials = runs(url)
    done = in_state(trials, TrialState.COMPLETE)
    assert sorted(t.user_attrs["fingerprint"] for t in done) == sorted(fingerprints.values())
    assert [trials[t.number] for t in before] == before


def test_ctrl_c_mid_confirm_records_nothing_half_done_and_a_rerun_trains_the_rest(
    tmp_path: Path, tally: Tally
) -> None:
    url = prepare(tmp_path)
    done, before = signal_mid_run(tmp_path, url, 3, signal.SIGINT)
    tally.inject("SIGINT (Ctrl-C) to a `regzoo confirm` process")
    assert done.returncode == 130, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), done.stderr
    trials = runs(url)
    assert not in_state(trials, TrialState.RUNNING)
    (interrupted,) = in_state(trials, TrialState.FAIL)
    assert interrupted.user_attrs["error"] == "interrupted (Ctrl-C / SIGINT)"
    assert in_state(trials, TrialState.COMPLETE) == before
    assert "confirm" not in load(url).user_attrs  # nothing half-recorded

    code, out = rerun(url, 3)
    assert code == 0, out[-3000:]
    assert f"{3 - len(before)} of 3 run(s) to train" in out
    after = runs(url)
    assert len(after) == len(trials) + 3 - len(before)  # only what was not complete
    assert not in_state(after, TrialState.RUNNING)
    assert_complete_confirmation(url, 3, before)
    tally.trials("SIGINT (Ctrl-C) to a `regzoo confirm` process", len(after))


@pytest.mark.slow  # ~30 s each: two confirmations around a killed process
@pytest.mark.parametrize("grace_elapsed", [False, True], ids=["rerun-at-once", "after-grace"])
def test_sigkill_mid_confirm_keeps_the_verdict_and_a_rerun_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally: Tally, grace_elapsed: bool
) -> None:
    """A killed run is left RUNNING; the rerun trains its point again and leaves no run
    RUNNING, whether the killed one's heartbeat has gone stale by then or not."""
    url = prepare(tmp_path)
    confirm_study(load(url), url, top=1, seeds=2, console=silent())
    recorded = load(url).user_attrs["confirm"]
    fast = {"REGZOO_HEARTBEAT_S": "1", "REGZOO_GRACE_S": "2"} if grace_elapsed else {}
    done, before = signal_mid_run(tmp_path, url, 4, signal.SIGKILL, env=fast)
    tally.inject("SIGKILL of a `regzoo confirm` process mid-run")
    assert done.returncode == -signal.SIGKILL
    (killed,) = in_state(runs(url), TrialState.RUNNING)
    assert load(url).user_attrs["confirm"] == recorded  # the earlier verdict, unchanged

    for key, value in fast.items():
        monkeypatch.setenv(key, value)
    if grace_elapsed:
        time.sleep(3)  # past REGZOO_GRACE_S since the killed process's last heartbeat
    code, out = rerun(url, 4)
    assert code == 0, out[-3000:]
    assert f"{4 - len(before)} of 4 run(s) to train" in out
    after = runs(url)
    assert_complete_confirmation(url, 4, before)
    still = [t.number for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not still, (
        f"run(s) {still} left RUNNING/WAITING in {COMPANION} (killed: {killed.number})"
    )
    assert after[killed.number].state == TrialState.FAIL
    tally.trials("SIGKILL of a `regzoo confirm` process mid-run", len(after))
