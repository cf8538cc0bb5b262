"""Four workers on one study, for each storage: exactly the requested trials, none locked out.

`regzoo run --workers 4` asks the trials and hands them to four worker processes it spawned,
each of which opens the storage, trains its trials, records them and tells them: between them
they must finish exactly the requested trials, with unique numbers, no failed trial (SQLite
under five writers would say "database is locked" without WAL and a busy timeout) and nothing
more started.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from optuna.trial import TrialState

from regzoo.studies.cli.main import main
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import (
    TINY,
    Tally,
    as_sets,
    assert_nothing_lost,
    load,
    trained_by,
)

WORKERS, TARGET = 4, 6


@pytest.mark.parametrize(
    "scheme",
    [
        "sqlite",
        pytest.param("journal", marks=pytest.mark.slow),
        pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.postgres]),
    ],
)
def test_four_workers_finish_exactly_the_requested_trials(
    scheme: str,
    in_tmp: Path,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    tally: Tally,
) -> None:
    if scheme == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"{scheme}:///{in_tmp / 'studies.db'}"
    args = ["--workers", str(WORKERS), "--trials", str(TARGET), "--storage", url]
    code = main(["run", str(DEFAULT_CONFIG), *args, "--wandb", "disabled", *as_sets(TINY)])
    out, err = capfd.readouterr()
    tally.inject(f"{WORKERS} concurrent workers on one study", WORKERS)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "locked" not in out + err
    trials = load(url).trials
    assert len(trials) == TARGET and not [t for t in trials if t.state == TrialState.FAIL]
    assert_nothing_lost(trials, TARGET, in_tmp / "runs")
    # All four took part, each a process of its own, none of them this (the study's) process.
    workers = {trained_by(t) for t in trials}
    assert len(workers) == WORKERS and os.getpid() not in workers, workers
    assert len({tuple(sorted(t.params.items())) for t in trials}) == TARGET  # no draw twice
    # The study's process prints every trial's line, once.
    lines = re.findall(r"trial +(\d+) (?:complete|pruned)", out)
    assert sorted(map(int, lines)) == list(range(TARGET)), out
    tally.trials(f"{WORKERS} concurrent workers on one study", len(trials))


def _open_at(url: str, start: float) -> str:
    """In a fresh process: wait for the common start time, then open the storage."""
    import time as _time

    from regzoo.studies.executor.storage import open_storage

    _time.sleep(max(0.0, start - _time.time()))
    try:
        open_storage(url)
    except Exception as exc:  # the failure under test, returned to the parent
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Two `regzoo run` commands started together on a fresh SQLite file: both created its
    tables, and the second failed with "table trials already exists" (seen running two shipped
    studies side by side). Four processes at one instant, three fresh files in a row."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.apply(_open_at, ("sqlite:///:memory:", 0.0))  # the workers have imported regzoo
        for attempt in range(3):
            url = f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}"
            start = time.time() + 1.0
            results = pool.starmap(_open_at, [(url, start)] * 4)
            assert results == ["ok"] * 4, results
