"""A worker killed with SIGKILL in the middle of a trial, while another worker goes on.

Both are real `regzoo run` workers of one study (as `--workers 2` starts them). The
killed worker's trial stops beating (RDB storages; for a journal file, its process is seen to be
gone) and the surviving worker fails it and retries its parameters; the study still reaches the
requested finished trials, and no other trial is lost or run twice. tests/studies/test_workers.py
covers the same kill with the study rerun after it; here the survivor runs alongside.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from regzoo.studies import load_config, open_study
from regzoo.studies.scaling.role import WORKER_ENV
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import (
    ENDLESS,
    FINISHED,
    TINY,
    Tally,
    as_sets,
    assert_nothing_lost,
    cli_env,
    load,
    run_command,
    running_trials,
    wait_for,
)

TARGET = 3
FAST_HEARTBEAT = {"REGZOO_HEARTBEAT_S": "1", "REGZOO_GRACE_S": "2"}


def kill_one_worker_while_another_runs(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    open_study(load_config(DEFAULT_CONFIG), url)  # as the `--workers` parent does first
    victim = subprocess.Popen(
        run_command(url, TARGET, *as_sets([*TINY, *ENDLESS])),
        cwd=cwd, env=cli_env(**FAST_HEARTBEAT, **{WORKER_ENV: "0/2"}), text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: len(running_trials(url)) == 1, victim, "the victim's trial runs", 120)
    survivor = subprocess.Popen(
        run_command(url, TARGET, *as_sets(TINY)),
        cwd=cwd, env=cli_env(**FAST_HEARTBEAT, **{WORKER_ENV: "1/2"}), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def survivor_finished_one() -> bool:
        return any(t.state in FINISHED for t in load(url).trials)

    wait_for(survivor_finished_one, survivor, "the survivor finishes a trial", 120)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out, err = survivor.communicate(timeout=300)
    return subprocess.CompletedProcess(survivor.args, survivor.returncode, out, err)


@pytest.mark.parametrize(
    "scheme",
    [
        # ~20 s each; test_workers.py's kill-and-rerun on SQLite stays in the default run
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
    done = kill_one_worker_while_another_runs(url, in_tmp)
    tally.inject("SIGKILL of a worker mid-trial")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = load(url).trials
    (killed,) = [t for t in trials if t.state == TrialState.FAIL]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params and retry.state in FINISHED
    assert len(trials) == TARGET + 1  # the killed one and its retry; nothing else ran twice
    assert_nothing_lost(trials, TARGET, in_tmp / "runs")
    tally.trials("SIGKILL of a worker mid-trial", len(trials))
