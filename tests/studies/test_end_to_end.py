"""The first end-to-end slice: the CLI runs, resumes and refuses bad configs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from regzoo.studies import load_config
from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from regzoo.zoo import load_model
from tests.conftest import DEFAULT_CONFIG, trials_folder
from tests.studies.wandb_records import read_run

TINY = [
    "--set",
    "trainer.max_epochs=2",
    "--set",
    "trainer.limit_train_batches=3",
    "--set",
    "confirm=null",
    "--set",
    "model.channels=[4, 8]",
    "--wandb",
    "disabled",
    "--no-progress",
]


@pytest.mark.parametrize("scheme, file", [("sqlite", "studies.db"), ("journal", "studies.log")])
def test_run_then_rerun_resumes_to_the_requested_trials(
    scheme: str, file: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{scheme}:///{in_tmp / file}"
    assert main(["run", str(DEFAULT_CONFIG), "--trials", "2", "--storage", url, *TINY]) == 0
    out = capsys.readouterr().out
    assert "0 of 2 trials already finished" in out
    assert "best trial" in out and "dashboard" in out
    study = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    first = study.trials  # a copy: `study.trials` reads the storage again
    assert len(first) == 2
    best = study.best_trial
    assert Path(best.user_attrs["checkpoint"]).is_file()
    assert 0.0 <= best.user_attrs["test/acc"] <= 1.0
    assert (
        trials_folder(in_tmp / "runs" / "cnn-digits") / f"trial-{best.number}" / "metrics.csv"
    ).is_file()

    assert main(["run", str(DEFAULT_CONFIG), "--trials", "3", "--storage", url, *TINY]) == 0
    assert "2 of 3 trials already finished" in capsys.readouterr().out
    resumed = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    assert [t.number for t in resumed.trials] == [0, 1, 2]
    assert resumed.trials[:2] == first  # the first two are kept, not rerun


def test_train_runs_the_fixed_values_once_with_the_same_outputs(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(DEFAULT_CONFIG), *TINY[:4], "--set", "model.regularization=l2"]
    assert main([*args, "--set", "model.l2=0.001", "--wandb", "offline"]) == 0
    out = capsys.readouterr().out
    run_dir = in_tmp / "runs" / "cnn-digits" / "train-1"
    model = load_model(run_dir / "best.ckpt")
    assert (model.hparams["l2"], model.hparams["weight_decay"]) == (0.001, 0.0)
    assert "val/loss" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "test/acc=" in out and f"wandb sync {Path('runs') / 'wandb'}/offline-run-*" in out
    (run,) = [read_run(d) for d in (in_tmp / "runs" / "wandb").glob("offline-run-*")]
    assert (run.name, run.group, run.summary["state"]) == (
        "cnn-digits-train",
        "cnn-digits",
        "complete",
    )
    assert not (in_tmp / "runs" / "studies.db").exists()  # no study, no storage


@pytest.mark.parametrize(("population", "started"), [("1", 1), ("8", 5)])
def test_timeout_stops_starting_trials(
    population: str, started: int, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked after each job, as Optuna checks after each trial: one trial on its own, or one
    population (the default study's 8, cut to the 5 trials asked for), then nothing new."""
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    args = ["run", str(DEFAULT_CONFIG), "--trials", "5", "--storage", url, *TINY]
    assert main([*args, "--set", "timeout=0.01", "--population", population]) == 0
    assert len(optuna.load_study(study_name="cnn-digits", storage=url).trials) == started


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


SHIPPED = sorted((DEFAULT_CONFIG.parent).glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # mnist1d is generated once for every config


@pytest.mark.parametrize("config", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_trains(config: Path, data_dir: Path, in_tmp: Path) -> None:
    shrink = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "pruner.name=none",  # a 1-epoch run has nothing to prune; hyperband's min_resource > 1
    ]
    args = [a for s in [*shrink, f"data.data_dir={data_dir}"] for a in ("--set", s)]
    assert main(["train", str(config), *args, "--wandb", "disabled"]) == 0
    cfg = load_config(config)
    model = load_model(in_tmp / "runs" / cfg.name / "train-1" / "best.ckpt")
    assert model.model_name == cfg.model.name
