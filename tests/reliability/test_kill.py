"""A worker process killed with SIGKILL in the middle of a trial, while another worker goes on.

`regzoo run --workers 2` asks the trials and hands them to two worker processes it spawned; each
trial records the pid of the worker that trains it (`worker`). One worker is killed while it
trains a trial beside the other, or while it is still starting, before it recorded itself on
the trial it was handed. The study's process replaces it and fails its trial (its process is
seen to be gone; RDB storages would also fail it by its stopped heartbeat), the trial's
parameters are retried, the other worker trains its own trial to the end, and the study still
reaches the requested finished trials and exits 0: no other trial is lost or run twice.
tests/studies/test_workers.py covers a lone `regzoo run` killed, then rerun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies import load_config, open_study
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import (
    FINISHED,
    TINY,
    Tally,
    as_sets,
    assert_nothing_lost,
    cli_env,
    load,
    run_command,
    running_trials,
    trained_by,
    worker_pids,
)

TARGET = 3
FAST_HEARTBEAT = {"REGZOO_HEARTBEAT_S": "1", "REGZOO_GRACE_S": "2"}
# none stops early; 300 tiny epochs (~6 s) keep both workers training together long enough to
# be seen doing so (at 30, ~0.6 s, a slow poll on a loaded machine could miss the overlap)
LONG = ["trainer.max_epochs=300", "early_stopping=null", "pruner.name=none"]


def run_and_kill(
    url: str, cwd: Path, sets: list[str], pick: Callable[[int, set[int]], int | None]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the study with `--workers 2` and SIGKILL the worker `pick(run's pid, its workers)`
    names, once it names one; the study's exit and output, and the pid killed. The victim is
    stopped (SIGSTOP) and `pick` asked again before the kill: what it saw still holds then."""
    open_study(load_config(DEFAULT_CONFIG), url)  # before the study's process: watched from here
    proc = subprocess.Popen(
        run_command(url, TARGET, *as_sets(sets), "--workers", "2"),
        cwd=cwd, env=cli_env(**FAST_HEARTBEAT), text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the study exited ({proc.returncode}) before the kill:\n{out}\n{err}")
            assert time.monotonic() < deadline, "no worker to kill within 120 s"
            victim = pick(proc.pid, worker_pids(proc.pid))
            if victim is not None:
                os.kill(victim, signal.SIGSTOP)  # frozen: what `pick` sees can no longer change
                if pick(proc.pid, worker_pids(proc.pid)) == victim:
                    os.kill(victim, signal.SIGKILL)
                    break
                os.kill(victim, signal.SIGCONT)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=180)
    finally:  # a study that hangs must not outlive its test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), victim


def assert_retried_and_nothing_lost(
    url: str, runs: Path, done: subprocess.CompletedProcess[str]
) -> tuple[FrozenTrial, list[FrozenTrial]]:
    """Exit 0; one trial failed, retried with its parameters; nothing else lost or run twice."""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = load(url).trials
    (killed,) = [t for t in trials if t.state == TrialState.FAIL]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params and retry.state in FINISHED
    assert len(trials) == TARGET + 1  # the killed one and its retry; nothing else ran twice
    assert_nothing_lost(trials, TARGET, runs)
    return killed, trials


@pytest.mark.parametrize(
    "scheme",
    [
        # ~30 s each; test_workers.py's kill-and-rerun on SQLite stays in the default run
        pytest.param("sqlite", marks=pytest.mark.slow),
        pytest.param("journal", marks=pytest.mark.slow),
        pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.postgres]),
    ],
)
def test_a_worker_killed_mid_trial_is_retried_by_the_other_and_nothing_is_lost(
    scheme: str, in_tmp: Path, request: pytest.FixtureRequest, tally: Tally
) -> None:
    if scheme == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"{scheme}:///{in_tmp / 'studies.db'}"
    beside: dict[int, FrozenTrial] = {}  # what the other worker trained when the victim died

    def training_beside_another(run: int, workers: set[int]) -> int | None:
        """A worker training a trial while the other worker trains one too."""
        training = {trained_by(t): t for t in running_trials(url) if trained_by(t) in workers}
        if len(training) < 2:
            return None
        victim, other = sorted(training)
        beside.clear()
        beside[other] = training[other]
        return victim

    done, victim = run_and_kill(url, in_tmp, [*TINY, *LONG], training_beside_another)
    tally.inject("SIGKILL of a worker mid-trial")
    killed, trials = assert_retried_and_nothing_lost(url, in_tmp / "runs", done)
    assert trained_by(killed) == victim  # the trial the killed worker was training
    ((other, survivor),) = beside.items()
    (after,) = [t for t in trials if t.number == survivor.number]
    assert after.state in FINISHED and trained_by(after) == other  # trained on, to its end
    tally.trials("SIGKILL of a worker mid-trial", len(trials))


@pytest.mark.slow  # ~30 s
def test_a_worker_killed_before_it_records_its_trial_is_retried_and_nothing_is_lost(
    in_tmp: Path, tally: Tally
) -> None:
    """The study's process asks a trial (recording itself as its worker) and hands it to a
    worker that dies before it records itself: the trial must not stay RUNNING under the live
    study's pid. On a journal file, which has no heartbeats, nothing else would fail it."""
    url = f"journal:///{in_tmp / 'studies.log'}"
    study_pid: list[int] = []

    def handed_a_trial_not_yet_recorded(run: int, workers: set[int]) -> int | None:
        """A worker, while the two asked trials still name the study's process (the workers
        are starting: importing torch)."""
        study_pid[:] = [run]
        running = running_trials(url)
        if len(workers) < 2 or len(running) < 2 or {trained_by(t) for t in running} != {run}:
            return None
        return min(workers)

    done, victim = run_and_kill(url, in_tmp, TINY, handed_a_trial_not_yet_recorded)
    tally.inject("SIGKILL of a worker mid-trial")
    killed, trials = assert_retried_and_nothing_lost(url, in_tmp / "runs", done)
    assert trained_by(killed) == study_pid[0]  # asked, never recorded by a worker
    assert victim not in {trained_by(t) for t in trials}  # it died before recording itself
    tally.trials("SIGKILL of a worker mid-trial", len(trials))
