"""Many workers on one storage, as real processes: exact trial counts, no locked database, and
a killed worker's trial failed by its stopped heartbeat and retried with the same parameters."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies import load_config, open_study
from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import SQLITE_BUSY_TIMEOUT_S, open_storage
from regzoo.studies.loop.budget import FINISHED, WORKER_ATTR, TrialBudget
from tests.conftest import DEFAULT_CONFIG, REPO
from tests.studies._budget_worker import STUDY

TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.accelerator=cpu",
    "confirm=null",
    "model.channels=[4, 8]",
    "population.size=1",  # one trial a worker: each test watches a worker train its trial
]


def as_sets(overrides: list[str]) -> list[str]:
    return [f"--set={o}" for o in overrides]


def test_two_workers_share_the_default_sqlite_storage(
    in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["--workers", "2", "--trials", "3", "--wandb", "disabled", *as_sets(TINY)]
    code = main(["run", str(DEFAULT_CONFIG), *args])
    out = capfd.readouterr().out
    assert code == 0, out
    db = in_tmp / "runs" / "studies.db"  # the default storage, sqlite:///runs/studies.db
    trials = optuna.load_study(study_name="cnn-digits", storage=f"sqlite:///{db}").trials
    assert [t.state in FINISHED for t in trials] == [True] * 3  # none failed ("locked"), no 4th
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3  # no draw twice
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # Two worker processes trained them, neither of them this one (the study's own process)...
    workers = {trained_by(t) for t in trials}
    assert len(workers) == 2 and os.getpid() not in workers, workers
    first, second = sorted(trials, key=lambda t: t.number)[:2]  # ...the first two at once
    assert trained_by(first) != trained_by(second)
    # ...and this process printed every trial's line, once, and the summary.
    assert sorted(map(int, re.findall(r"trial +(\d) (?:complete|pruned)", out))) == [0, 1, 2]
    assert len(re.findall(r"cnn-digits: \d complete, \d pruned, 0 failed", out)) == 1
    assert len(re.findall(r"best trial \d+:", out)) == 1  # the summary: the parent's alone


def test_sqlite_connections_wait_for_writers_and_sync_the_log_at_checkpoints(
    tmp_path: Path,
) -> None:
    """The storage's own connections: WAL, a busy timeout, `synchronous=NORMAL` (1), usable
    from the pool's other threads; a study written through them reads back in a new process's
    plain connection."""
    db = tmp_path / "studies.db"
    storage = open_storage(f"sqlite:///{db}")
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    trial.set_user_attr("kept", 3)
    study.tell(trial, 0.5)
    assert isinstance(storage, optuna.storages.RDBStorage)
    with storage.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        assert raw.execute("PRAGMA synchronous").fetchone() == (1,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(db)!r}).execute("
            '"select value_json from trial_user_attributes").fetchall())',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert read.stdout.strip() == "[('3',)]"


def trained_by(trial: FrozenTrial) -> int:
    """The pid of the process that trained `trial` (its `worker` attr: "host:pid")."""
    host, _, pid = str(trial.user_attrs[WORKER_ATTR]).rpartition(":")
    assert host == socket.gethostname()
    return int(pid)


def budget_run(url: str, workers: int, target: int, cwd: Path) -> list[FrozenTrial]:
    storage = open_storage(url)
    optuna.create_study(study_name=STUDY, storage=storage)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.studies._budget_worker", url, str(target)]
    procs = [subprocess.Popen(command, cwd=cwd, env=env) for _ in range(workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    return optuna.load_study(study_name=STUDY, storage=storage).trials


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_workers_finish_exactly_the_target_and_replace_a_failed_trial(
    kind: str, tmp_path: Path
) -> None:
    trials = budget_run(f"{kind}:///{tmp_path / 'budget.db'}", 3, 5, tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [1]
    assert len(trials) == 6  # MaxTrialsCallback alone would let up to 2 more start


def test_a_dead_local_workers_journal_trial_is_failed_and_requeued(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'studies.log'}"
    study = optuna.create_study(study_name=STUDY, storage=open_storage(url))
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = study.ask()
    orphan.suggest_float("x", 0.0, 1.0)
    orphan.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{gone.pid}")
    with TrialBudget(study, url, 1) as budget:
        assert budget.claim()  # the dead worker's trial no longer holds the only slot
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == 0


def kill_a_worker_mid_trial_then_run_another(url: str, cwd: Path) -> list[FrozenTrial]:
    """SIGKILL a worker whose trial is running, then run the study to 2 finished trials."""
    env = {**os.environ, "REGZOO_HEARTBEAT_S": "1", "REGZOO_GRACE_S": "2", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "regzoo", "run", str(DEFAULT_CONFIG), "--storage", url]
    command += ["--trials", "2", "--wandb", "disabled", "--no-progress"]
    cfg = load_config(DEFAULT_CONFIG)
    study = open_study(cfg, url)  # before the worker, so this process can watch it
    endless = [
        "trainer.max_epochs=100000",
        "early_stopping=null",
        "pruner.name=none",
        "population.size=1",  # one trial killed, not a population of two
    ]
    victim = subprocess.Popen(
        [*command, *as_sets(endless)], cwd=cwd, env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    last = list(cfg.search)[-1]  # sampled last: the trial is training
    while not any(last in t.params for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert victim.poll() is None and time.monotonic() < deadline, "the trial never started"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = subprocess.run(
        [*command, *as_sets(TINY)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return study.trials


def assert_retried_once(trials: list[FrozenTrial]) -> None:
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number)
    assert retry.params == failed[0].params and retry.state in FINISHED
    assert sum(t.state in FINISHED for t in trials) == 2
    assert len(trials) == 3


def test_a_killed_workers_trial_fails_by_heartbeat_and_is_retried_sqlite(in_tmp: Path) -> None:
    assert_retried_once(kill_a_worker_mid_trial_then_run_another("sqlite:///studies.db", in_tmp))


def test_scaling_mistakes_exit_2_with_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ["run", str(DEFAULT_CONFIG), "--wandb", "disabled"]
    assert main([*run, "--set", "trainer.devices=2"]) == 2
    assert "--devices-per-trial 2" in capsys.readouterr().err
    # `auto` means every GPU on a GPU machine, where Lightning would relaunch the command once
    # per device: refused on every machine, in every role, before anything is written.
    for extra in ([], ["--workers", "2"], ["--devices-per-trial", "2"]):
        assert main([*run, *extra, "--set", "trainer.devices=auto"]) == 2
        err = capsys.readouterr().err
        assert "trainer.devices=auto" in err and "--devices-per-trial" in err
    assert main(["train", str(DEFAULT_CONFIG), "--set", "trainer.devices=auto"]) == 2
    assert "trainer.devices=auto" in capsys.readouterr().err
    assert not (in_tmp / "runs").exists()
    if not torch.cuda.is_available():
        assert main([*run, "--workers", "2", "--set", "trainer.accelerator=cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    monkeypatch.setenv("REGZOO_GRACE_S", "soon")
    assert main([*run, "--storage", "sqlite:///s.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "REGZOO_GRACE_S='soon'" in err and len(err.splitlines()) == 1
