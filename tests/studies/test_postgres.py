"""Many machines share a PostgreSQL storage: a real server (initdb/pg_ctl), real workers."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from tests.conftest import DEFAULT_CONFIG, trials_folder
from tests.studies.test_workers import (
    FINISHED,
    TINY,
    as_sets,
    assert_retried_once,
    budget_run,
    kill_a_worker_mid_trial_then_run_another,
)

pytestmark = pytest.mark.postgres


@pytest.mark.slow  # ~40 s; test_many_workers_finish_exactly_the_target_on_postgres is quick
def test_two_workers_on_postgres_finish_the_trials_none_lost_or_duplicated(
    in_tmp: Path, postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["--workers", "2", "--trials", "3", "--storage", postgres_url, "--wandb", "disabled"]
    code = main(["run", str(DEFAULT_CONFIG), *args, *as_sets(TINY)])
    out = capfd.readouterr().out
    assert code == 0, out
    trials = optuna.load_study(study_name="cnn-digits", storage=open_storage(postgres_url)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2]  # no trial beyond the three
    assert all(t.state in FINISHED for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3
    for t in trials:  # every finished trial left its own folder of results
        assert (
            trials_folder(in_tmp / "runs" / "cnn-digits") / f"trial-{t.number}" / "metrics.csv"
        ).is_file()


def test_many_workers_finish_exactly_the_target_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    trials = budget_run(postgres_url, 3, 5, tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    assert len(trials) == 6  # the one failed trial was replaced, nothing more started


@pytest.mark.slow
def test_a_killed_workers_trial_fails_by_heartbeat_and_is_retried_postgres(
    in_tmp: Path, postgres_url: str
) -> None:
    assert_retried_once(kill_a_worker_mid_trial_then_run_another(postgres_url, in_tmp))


def test_one_process_samples_the_same_trials_on_sqlite_and_postgres(
    in_tmp: Path, postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The sampler seed of a process alone comes from the config, whatever the storage or the
    machine (a host-derived seed once made PostgreSQL draw other trials than SQLite)."""

    def params(url: str) -> list[dict[str, object]]:
        args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", "3", "--no-progress"]
        extra = as_sets([*TINY, "trainer.max_epochs=1", "pruner.name=none"])
        assert main([*args, "--wandb", "disabled", *extra]) == 0
        study = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
        return [t.params for t in sorted(study.trials, key=lambda t: t.number)]

    on_sqlite = params(f"sqlite:///{in_tmp / 'studies.db'}")
    on_postgres = params(postgres_url)
    capfd.readouterr()
    assert len(on_sqlite) == 3 and on_postgres == on_sqlite
