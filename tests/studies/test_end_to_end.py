"""The first end-to-end slice: the CLI runs, resumes and refuses bad configs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from studies.__main__ import main
from tests.conftest import DEFAULT_CONFIG

TINY = [
    "--set",
    "trainer.max_epochs=2",
    "--set",
    "trainer.limit_train_batches=3",
    "--wandb",
    "disabled",
    "--no-progress",
]


def test_run_then_rerun_resumes_to_the_requested_trials(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    assert main(["run", str(DEFAULT_CONFIG), "--trials", "2", "--storage", url, *TINY]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 trials already finished" in out
    assert "best trial" in out and "dashboard" in out
    study = optuna.load_study(study_name="cnn-digits", storage=url)
    assert len(study.trials) == 2
    best = study.best_trial
    assert Path(best.user_attrs["checkpoint"]).is_file()
    assert 0.0 <= best.user_attrs["test/acc"] <= 1.0
    assert (in_tmp / "runs" / "cnn-digits" / f"trial-{best.number}" / "metrics.csv").is_file()

    assert main(["run", str(DEFAULT_CONFIG), "--trials", "3", "--storage", url, *TINY]) == 0
    assert "2 of 3 trials already finished" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="cnn-digits", storage=url).trials) == 3


def test_bad_config_exits_2_with_one_line_and_writes_nothing(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = in_tmp / "studies.db"
    code = main(
        [
            "run",
            str(DEFAULT_CONFIG),
            "--storage",
            f"sqlite:///{db}",
            "--set",
            "search.model.dropout={float: [0.5, 0.1]}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "search.model.dropout" in err and "inverted" in err
    assert len(err.splitlines()) == 1
    assert (
        not db.exists()
        or not sqlite3.connect(db)
        .execute("select name from sqlite_master where name='studies'")
        .fetchall()
    )
