"""Four workers on one study, for each storage: exactly the requested trials, none locked out.

`regzoo run --workers 4` starts four real worker processes on the storage; between
them they must finish exactly the requested trials, with unique numbers, no failed trial (SQLite
under four writers would say "database is locked" without WAL and a busy timeout) and nothing
more started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from regzoo.studies.cli.main import main
from regzoo.studies.loop.budget import WORKER_ATTR
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import TINY, Tally, as_sets, assert_nothing_lost, load

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
    assert all(f"w{i} study cnn-digits" in out for i in range(WORKERS))  # all four took part
    assert all(t.user_attrs[WORKER_ATTR] for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == TARGET  # own sampler seeds
    tally.trials(f"{WORKERS} concurrent workers on one study", len(trials))
