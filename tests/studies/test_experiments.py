"""The lecture's experiments in `--quick` form: real studies (grid sampler, SQLite, Lightning),
each test asserting the direction the course predicts, on the numbers the run measured."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies import validate_config
from regzoo.studies.cli.main import main
from regzoo.studies.experiments import EXPERIMENTS, get_experiment, list_experiments, run_experiment
from regzoo.studies.experiments._spec import Row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def storage(in_tmp: Path) -> str:
    return f"sqlite:///{in_tmp / 'experiments.db'}"


def quick(name: str, storage: str) -> dict[str, Row]:
    """Run one experiment's quick form; its table's rows keyed by their first column."""
    result = run_experiment(
        get_experiment(name),
        quick=True,
        storage=storage,
        wandb="disabled",
        console=Console(quiet=True),
    )
    assert result.figure.read_bytes().startswith(PNG_MAGIC)
    return {str(next(iter(row.values()))): row for row in result.rows}


def test_every_setting_is_a_valid_study_config() -> None:
    assert list_experiments()[0] == "xor" and len(EXPERIMENTS) == 11
    for exp in EXPERIMENTS.values():
        labels = [s.label for s in exp.settings]
        assert len(set(labels)) == len(labels), exp.name
        for setting in exp.settings:
            for is_quick in (False, True):
                cfg = validate_config(exp.raw_config(setting, quick=is_quick), source=exp.name)
                assert cfg.sampler.name == "grid" and cfg.pruner.name == "none"


def test_unknown_experiment_exits_2_with_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["experiment", "dropuot", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dropuot" in err and "dropout" in err and len(err.splitlines()) == 1
    assert not (in_tmp / "runs").exists()


def test_cli_dropout_writes_figure_table_tracks_and_resumes(
    in_tmp: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["experiment", "dropout", "--quick", "--storage", storage, "--wandb", "offline"]
    assert main(args) == 0
    out_dir = in_tmp / "runs" / "experiments" / "dropout-quick"
    assert (out_dir / "figure.png").read_bytes().startswith(PNG_MAGIC)
    with (out_dir / "table.csv").open() as f:
        rows = {r["dropout"]: r for r in csv.DictReader(f)}
    assert "| dropout |" in (out_dir / "table.md").read_text()
    # The course: heavy dropout fits the training set less.
    assert float(rows["p=0.9"]["train_loss"]) > float(rows["p=0"]["train_loss"])
    study = optuna.load_study(study_name="experiment-dropout-quick", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for t in complete:  # the gap at the kept epoch, as the run stored it
        row = rows[t.params["dropout"]]
        assert float(row["best_gap_acc"]) == pytest.approx(t.user_attrs["gap/acc"])
        assert float(row["best_gap_loss"]) == pytest.approx(t.user_attrs["gap/loss"])
    assert sorted(t.params["dropout"] for t in complete) == ["p=0", "p=0.9"]
    assert all(Path(t.user_attrs["run_dir"], "metrics.csv").is_file() for t in complete)
    assert len(list((in_tmp / "runs" / "wandb").glob("offline-run-*"))) == 2
    capsys.readouterr()

    assert main(args) == 0  # a rerun reads the finished trials back: nothing is retrained
    assert "trial " not in capsys.readouterr().out
    assert (
        len(optuna.load_study(study_name="experiment-dropout-quick", storage=storage).trials) == 2
    )


def test_xor_needs_a_hidden_layer(storage: str) -> None:
    rows = quick("xor", storage)
    linear, relu, absolute = rows["linear"], rows["2 ReLU units"], rows["2 abs units"]
    assert linear["truth_table_acc"] <= 0.75 and linear["train_acc"] < 0.75
    assert absolute["truth_table_acc"] == 1.0 and absolute["train_acc"] >= 0.97
    assert relu["train_acc"] > linear["train_acc"] + 0.1


def test_small_learning_rate_needs_more_epochs(storage: str) -> None:
    rows = quick("learning_rate", storage)
    fast, slow, long = rows["lr=0.3"], rows["lr=0.01"], rows["lr=0.01, 5000 epochs"]
    assert slow["epochs"] == fast["epochs"] < long["epochs"]
    assert slow["train_loss"] > fast["train_loss"]
    assert long["train_loss"] < slow["train_loss"]


def test_adam_beats_sgd_and_the_piecewise_schedule_follows_its_definition(
    storage: str, in_tmp: Path
) -> None:
    rows = quick("optimizers", storage)
    assert rows["adam"]["train_loss"] < rows["sgd"]["train_loss"]
    piecewise = rows["sgd piecewise 0.3/0.05/0.01"]
    assert piecewise["lr_first"] == pytest.approx(0.3) and piecewise["lr_last"] == pytest.approx(
        0.01
    )
    out_dir = in_tmp / "runs" / "experiments" / "optimizers-quick"
    lrs = [np.load(p) for p in out_dir.glob("*/trial-*/lr.npy")]
    [schedule] = [lr for lr in lrs if lr[0] == pytest.approx(0.3)]  # the others start at 0.03
    expected = np.array([0.3] * 50 + [0.05] * 40 + [0.01] * 10)  # quick: 100 epochs
    np.testing.assert_allclose(schedule, expected, rtol=1e-6)


def test_zero_initialized_hidden_weights_never_move(storage: str) -> None:
    rows = quick("initialization", storage)
    zeros, constant, kaiming = rows["zeros"], rows["constant 0.1"], rows["kaiming"]
    assert zeros["hidden_max_abs"] == 0.0 and zeros["hidden_moved"] == 0.0
    assert zeros["output_moved"] == 0.0  # the hidden layer outputs zeros: no gradient either
    assert constant["hidden_moved"] > 0 and constant["hidden_distinct_units"] == 1
    assert kaiming["hidden_moved"] > 0 and kaiming["hidden_distinct_units"] == 32
    assert kaiming["train_loss"] < zeros["train_loss"]


def test_standardized_inputs_train_faster_with_tamer_gradients(storage: str) -> None:
    rows = quick("normalization", storage)
    raw, standard = rows["none"], rows["standard"]
    assert standard["train_loss"] < raw["train_loss"]
    assert raw["grad_norm_first"] > 10 * standard["grad_norm_first"]


def test_l2_shrinks_the_weights_and_fits_less(storage: str) -> None:
    rows = quick("l2", storage)
    assert rows["l2=0.005"]["weight_norm"] < rows["l2=0"]["weight_norm"]
    assert rows["l2=0.005"]["train_loss"] > rows["l2=0"]["train_loss"]


def test_l2_equals_weight_decay_under_sgd_not_under_adam(storage: str) -> None:
    result = run_experiment(
        get_experiment("weight_decay_vs_l2"),
        quick=True,
        storage=storage,
        wandb="disabled",
        console=Console(quiet=True),
    )
    distance: dict[str, Any] = {r["optimizer"]: r["max_relative_distance"] for r in result.rows}
    assert distance["sgd"] < 1e-4
    assert distance["adam"] > 1e-2


def test_early_stopping_stops_before_the_end_at_a_lower_validation_loss(storage: str) -> None:
    rows = quick("early_stopping", storage)
    full, stopped = rows["no early stopping"], rows["early stopping"]
    assert full["stopped_at"] == 300
    assert stopped["best_epoch"] < stopped["stopped_at"] < full["stopped_at"]
    assert stopped["val_loss_at_best"] < full["val_loss_at_end"]


def test_augmentation_makes_the_training_set_harder_to_fit(storage: str) -> None:
    rows = quick("augmentation", storage)
    none, everything = rows["none"], rows["all"]
    assert everything["train_loss"] > none["train_loss"]
    gap = {k: r["val_loss"] - r["train_loss"] for k, r in (("none", none), ("all", everything))}
    assert gap["all"] < gap["none"]


def test_more_capacity_fits_the_training_set_closer_and_overfits_more(storage: str) -> None:
    result = run_experiment(
        get_experiment("capacity"),
        quick=True,
        storage=storage,
        wandb="disabled",
        console=Console(quiet=True),
    )
    rows = {(r["layers"], r["units"]): r for r in result.rows}
    small, big = rows[(1, 8)], rows[(3, 128)]
    assert big["params"] > 100 * small["params"]
    assert big["train_loss"] < small["train_loss"]
    assert big["val_loss"] - big["train_loss"] > small["val_loss"] - small["train_loss"]


def test_a_diverged_setting_is_a_failed_trial_with_its_reason_and_a_rerun_keeps_it(
    storage: str,
) -> None:
    """Experiments run the studies' objective: a diverged setting fails with `error` (as a
    study's trial does), not a COMPLETE trial worth ±inf; it still has its row, and a rerun
    trains nothing again."""
    import matplotlib.pyplot as plt

    from regzoo.studies.executor.storage import open_storage
    from regzoo.studies.experiments._course import QUICK, course_config, loss_table
    from regzoo.studies.experiments._spec import Experiment, Setting

    exp = Experiment(
        name="diverges",
        title="one setting that diverges",
        factor="lr",
        base=course_config(optimizer="sgd", lr=0.05),
        settings=[
            Setting("lr=0.05", {"trainer.max_epochs": 3}),
            Setting(
                "exploding",
                {
                    "model.lr": 1e9,
                    "model.init": "normal",
                    "model.init_std": 1e30,
                    "trainer.max_epochs": 3,
                },
            ),
        ],
        table=loss_table("lr"),
        figure=lambda run, rows: plt.figure(),
        quick=QUICK,
    )

    def run() -> list[optuna.trial.FrozenTrial]:
        rows = run_experiment(
            exp, quick=True, storage=storage, wandb="disabled", console=Console(quiet=True)
        ).rows
        assert [row["lr"] for row in rows] == ["lr=0.05", "exploding"]
        study_name = exp.study_name(quick=True)
        return optuna.load_study(study_name=study_name, storage=open_storage(storage)).trials

    first = run()
    by_label = {t.params["lr"]: t for t in first}
    assert by_label["lr=0.05"].state == TrialState.COMPLETE
    exploded = by_label["exploding"]
    assert exploded.state == TrialState.FAIL and exploded.value is None
    assert exploded.user_attrs["error"].startswith("non-finite")
    assert exploded.user_attrs["diverged_at"] >= 0  # the 0-based epoch, as metrics.csv counts
    assert len(run()) == len(first) == 2  # nothing retrained
