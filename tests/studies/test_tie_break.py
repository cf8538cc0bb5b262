"""Which epoch a trial keeps and how trials rank: `objective.tie_break` among equal values (within
a trial, by the checkpoint; between trials, by `ranked_trials`) and `checkpoint: last`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from optuna.trial import TrialState, create_trial
from rich.console import Console

from regzoo.datamodules import create_datamodule
from regzoo.studies import ConfigError, load_config, open_study
from regzoo.studies.cli.main import main
from regzoo.studies.config.load import validate_config
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.loop.read import ranked_trials
from regzoo.studies.loop.study import StudyOutcome
from regzoo.studies.results.console import print_summary
from regzoo.studies.trial.train import train_run
from regzoo.zoo import load_model
from tests.conftest import DEFAULT_CONFIG, spec_of

# Noise-free moons: a small MLP reaches val/acc 1.0 in a few epochs and stays there while its
# val/loss keeps falling, so many epochs tie on the objective.
MOONS = {"name": "moons", "noise": 0.0, "n_samples": 400, "batch_size": 32}
FNN = {"name": "fnn", "hidden": [64], "lr": 0.05}


def moons_config(root: Path, **changes: Any) -> StudyConfig:
    raw: dict[str, Any] = {
        "name": "moons-ties",
        "model": FNN,
        "data": MOONS,
        "trainer": {"max_epochs": 10, "accelerator": "cpu"},
        "objective": {"metric": "val/acc", "direction": "maximize", "tie_break": "val/loss"},
        "early_stopping": None,
        "pruner": {"name": "none"},
        "runs_dir": str(root / "runs"),
    }
    return validate_config({**raw, **changes}, source="test")


def stored_epoch(checkpoint: str | Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"])


def validation_rows(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv's validation rows, one per epoch in order."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    return [{k: float(v) for k, v in r.items() if v} for r in rows]


def kept_by_rule(accs: list[float], losses: list[float]) -> int:
    """The epoch a tie-breaking checkpoint must keep: the best accuracy, then the lowest loss,
    then the earliest."""
    best = max(accs)
    return min((e for e, a in enumerate(accs) if a == best), key=lambda e: (losses[e], e))


# ---- between trials: ranked_trials ---------------------------------------------------------------

# (value, tie_break attr or None) of trials 0.. in the order they are added.
TRIALS = [(0.90, 0.30), (0.95, 0.50), (0.95, 0.20), (0.95, None), (0.95, 0.40)]


def study_with(tmp_path: Path, objective: dict[str, Any]) -> optuna.Study:
    cfg = load_config(DEFAULT_CONFIG, overrides=[f"objective={objective}"])
    study = open_study(cfg, f"sqlite:///{tmp_path / 'studies.db'}")
    for value, tie in TRIALS:
        attrs = {} if tie is None else {"tie_break": tie}
        study.add_trial(create_trial(value=value, user_attrs=attrs))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"tie_break": 0.0}))
    return study


@pytest.mark.parametrize(
    "objective, order",
    [
        # val/loss breaks val/acc ties: lower first, the trial without it last among them.
        ("{metric: val/acc, direction: maximize, tie_break: val/loss}", [2, 4, 1, 3, 0]),
        # no tie_break: by value only, equal values in the order the trials ran.
        ("{metric: val/acc, direction: maximize}", [1, 2, 3, 4, 0]),
    ],
)
def test_ranked_trials_break_equal_values_by_the_configs_tie_break(
    tmp_path: Path, objective: str, order: list[int]
) -> None:
    study = study_with(tmp_path, objective)
    assert [t.number for t in ranked_trials(study)] == order


def test_an_accuracy_tie_break_ranks_higher_first_under_a_minimized_loss(tmp_path: Path) -> None:
    study = study_with(tmp_path, "{metric: val/loss, direction: minimize, tie_break: val/acc}")
    assert [t.number for t in ranked_trials(study)] == [0, 1, 4, 2, 3]


def test_a_study_without_a_stored_config_ranks_by_value(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    for value, tie in TRIALS:
        study.add_trial(create_trial(value=value, user_attrs={"tie_break": tie or 0.0}))
    assert [t.number for t in ranked_trials(study)] == [1, 2, 3, 4, 0]


def test_the_summary_ranks_by_the_tie_break_and_shows_it(tmp_path: Path) -> None:
    objective = "{metric: val/acc, direction: maximize, tie_break: val/loss}"
    study = study_with(tmp_path, objective)
    cfg = load_config(DEFAULT_CONFIG, overrides=[f"objective={objective}"])
    console = Console(record=True, width=200)
    print_summary(StudyOutcome(study, 0, "sqlite:///x.db", "disabled"), cfg, console)
    out = console.export_text()
    assert "best trial 2: val/acc=0.9500, val/loss=0.2," in out
    header = next(line for line in out.splitlines() if "trial" in line and "test/acc" in line)
    assert "val/loss" in header
    rows = [line.split("│")[1].strip() for line in out.splitlines() if line.count("│") > 4]
    assert rows == ["2", "4", "1", "3", "0"]


# ---- within a trial: which epoch the checkpoint keeps --------------------------------------------


class EpochMetrics(L.Callback):
    def __init__(self) -> None:
        self.acc: list[float] = []
        self.loss: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.acc.append(float(trainer.callback_metrics["val/acc"]))
        self.loss.append(float(trainer.callback_metrics["val/loss"]))


def test_a_tied_epoch_with_a_lower_loss_replaces_the_kept_one(tmp_path: Path) -> None:
    cfg = moons_config(
        tmp_path,
        trainer={"max_epochs": 10, "accelerator": "cpu"},
        objective={"metric": "val/acc", "direction": "maximize", "tie_break": "val/loss"},
    )
    plain = ModelCheckpoint(
        dirpath=tmp_path / "plain", monitor="val/acc", mode="max", filename="best"
    )
    epochs = EpochMetrics()
    result = train_run(spec_of(cfg, tmp_path / "run", seed=1), callbacks=[epochs, plain])
    first_best = epochs.acc.index(max(epochs.acc))
    kept = kept_by_rule(epochs.acc, epochs.loss)
    assert kept != first_best  # the data saturate: the later tied epoch is more confident
    assert stored_epoch(plain.best_model_path) == first_best  # Lightning keeps the first
    assert result.checkpoint is not None and stored_epoch(result.checkpoint) == kept
    assert result.metrics["tie_break"] == epochs.loss[kept]
    assert result.value == float(plain.best_model_score) == max(epochs.acc)


def test_a_trial_records_the_tie_break_of_its_kept_epoch(tmp_path: Path) -> None:
    cfg = moons_config(tmp_path)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    run_dir = tmp_path / "trial-0"
    result = train_run(spec_of(cfg, run_dir, seed=1), trial=trial)  # told by its lifecycle
    rows = validation_rows(run_dir)
    accs, losses = [r["val/acc"] for r in rows], [r["val/loss"] for r in rows]
    kept = kept_by_rule(accs, losses)
    (done,) = study.trials
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert stored_epoch(done.user_attrs["checkpoint"]) == kept
    assert done.value == result.value == pytest.approx(accs[kept])
    assert done.user_attrs["tie_break"] == pytest.approx(losses[kept])


def test_an_unlogged_tie_break_metric_fails_the_run_naming_it(tmp_path: Path) -> None:
    cfg = moons_config(
        tmp_path,
        trainer={"max_epochs": 1, "accelerator": "cpu"},
        objective={"metric": "val/acc", "direction": "maximize", "tie_break": "val/f1"},
    )
    result = train_run(spec_of(cfg, tmp_path / "run"))
    assert result.state == "failed"
    assert result.error is not None
    assert "objective.tie_break='val/f1' is not a logged metric" in result.error


# ---- checkpoint: last ----------------------------------------------------------------------------


def test_checkpoint_last_scores_and_tests_the_last_epoch(tmp_path: Path) -> None:
    # A learning rate too small to move the model: every epoch ties, so the best checkpoint
    # would be epoch 0 and only `last` keeps epoch 2.
    model = {**FNN, "optimizer": "sgd", "lr": 1.0e-12}
    cfg = moons_config(
        tmp_path, model=model, trainer={"max_epochs": 3, "accelerator": "cpu"}, checkpoint="last"
    )
    result = train_run(spec_of(cfg, tmp_path / "run"))
    rows = validation_rows(tmp_path / "run")
    assert result.epochs == 3 and len(rows) == 3
    assert result.checkpoint is not None
    assert result.checkpoint.name == "last.ckpt" and stored_epoch(result.checkpoint) == 2
    assert result.value == pytest.approx(rows[-1]["val/acc"])
    assert result.metrics["tie_break"] == pytest.approx(rows[-1]["val/loss"])
    dm = create_datamodule(seed=0, **MOONS)
    x, y = dm.splits["test"]
    with torch.no_grad():
        acc = float((load_model(result.checkpoint)(x).argmax(1) == y).float().mean())
    assert result.metrics["test/acc"] == pytest.approx(acc)


# ---- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "objective, words",
    [
        ("{metric: val/acc, tie_break: val/acc}", ["objective", "tie_break must differ"]),
        ("{metric: val/acc, tie_break: test/loss}", ["objective.tie_break", "validation metric"]),
    ],
)
def test_a_bad_tie_break_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], objective: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError):
        load_config(DEFAULT_CONFIG, overrides=[f"objective={objective}"])
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert (
        main(["run", str(DEFAULT_CONFIG), "--storage", url, "--set", f"objective={objective}"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
