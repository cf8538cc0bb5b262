"""The one trial lifecycle: what a run's epoch metrics decide (kept epoch, divergence, early
stopping, pruning) and the state it tells Optuna; driven by hand as a population's member is,
and through Lightning's hooks (`LifecycleCallback`) for any LightningModule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from optuna.trial import TrialState
from torch.utils.data import DataLoader, TensorDataset

from regzoo.studies.config.load import validate_config
from regzoo.studies.trial.callbacks import LifecycleCallback
from regzoo.studies.trial.lifecycle import Lifecycle, Step
from regzoo.studies.trial.spec import TrialSpec


def config(tmp_path: Path, **changes: Any) -> Any:
    raw: dict[str, Any] = {
        "name": "life",
        "model": {"name": "fnn", "hidden": [8]},
        "data": {"name": "moons"},
        "objective": {"metric": "val/acc", "direction": "maximize"},
        "early_stopping": None,
        "runs_dir": str(tmp_path / "runs"),
    }
    return validate_config({**raw, **changes}, source="test")


def life(tmp_path: Path, trial: optuna.Trial | None = None, **changes: Any) -> Lifecycle:
    spec = TrialSpec(config(tmp_path, **changes), {}, tmp_path / "run", 0, "run")
    return Lifecycle(spec, trial)


class Scripted(L.LightningModule):
    """A user's own LightningModule: logs a scripted `val/loss` and `val/acc` each epoch."""

    def __init__(self, losses: list[float], accs: list[float] | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.losses, self.accs = losses, accs or [0.5] * len(losses)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        epoch = self.current_epoch
        self.log("val/loss", self.losses[epoch])
        self.log("val/acc", self.accs[epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def loader(self) -> DataLoader[Any]:
        return DataLoader(TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,))), batch_size=8)


def fit(module: Scripted, *callbacks: L.Callback, root: Path) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=len(module.losses),
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(module, module.loader(), module.loader())
    return trainer


LOSSES = [1.0, 0.95, 0.85, 0.9, 0.8, 0.7, 0.6, 0.5]


@pytest.mark.parametrize(
    ("patience", "min_delta", "losses"),
    [(2, 0.1, LOSSES), (1, 0.0, LOSSES), (3, 0.05, LOSSES), (5, 0.0, [1.0, 2.0, math.nan, 0.1])],
)
def test_early_stopping_stops_at_the_epoch_lightnings_callback_stops(
    tmp_path: Path, patience: int, min_delta: float, losses: list[float]
) -> None:
    lightning = LightningEarlyStopping(
        monitor="val/loss", patience=patience, min_delta=min_delta, mode="min", check_finite=True
    )
    trainer = fit(Scripted(losses), lightning, root=tmp_path / "lightning")
    stopped_at = trainer.current_epoch - 1  # the last epoch trained
    es = {"monitor": "val/loss", "patience": patience, "min_delta": min_delta, "mode": "min"}
    ours = life(
        tmp_path, early_stopping=es, objective={"metric": "val/loss", "direction": "minimize"}
    )
    stops = [ours.epoch_end(e, {"val/loss": v, "val/acc": 0.5}).stop for e, v in enumerate(losses)]
    first = stops.index(True) if True in stops else len(losses) - 1
    assert first == stopped_at


def test_a_tied_epoch_with_a_lower_tie_break_is_kept(tmp_path: Path) -> None:
    ours = life(tmp_path, objective={"metric": "val/acc", "tie_break": "val/loss"})
    accs, losses = [0.5, 0.9, 0.9, 0.8, 0.9], [1.0, 0.5, 0.3, 0.2, 0.4]
    kept = [
        ours.epoch_end(e, {"val/acc": a, "val/loss": v}).keep
        for e, (a, v) in enumerate(zip(accs, losses, strict=True))
    ]
    assert kept == [True, True, True, False, False]
    assert (ours.best, ours.best_tie, ours.best_epoch) == (0.9, 0.3, 2)
    result = ours.finish(checkpoint=None)
    assert result.state == "complete" and result.values == [0.9]
    assert result.metrics == {"tie_break": 0.3} and result.epochs == 5


def test_checkpoint_last_keeps_every_epoch(tmp_path: Path) -> None:
    ours = life(tmp_path, checkpoint="last")
    kept = [
        ours.epoch_end(e, {"val/acc": a, "val/loss": 1.0}).keep for e, a in enumerate([0.9, 0.1])
    ]
    assert kept == [True, True] and ours.best == 0.1


@pytest.mark.parametrize("bad", ["val/acc", "val/loss", "train/loss"])
def test_a_non_finite_objective_or_loss_fails_the_run_at_its_epoch(
    tmp_path: Path, bad: str
) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    ours = life(tmp_path, trial)
    ok = {"val/acc": 0.5, "val/loss": 1.0, "train/loss": 1.0}
    assert ours.epoch_end(0, ok) == Step(keep=True, stop=False)
    step = ours.epoch_end(1, {**ok, bad: math.inf if bad == "val/loss" else math.nan})
    assert step.stop and not step.keep and not ours.testable
    result = ours.finish(checkpoint=None, evaluated={"test/acc": 0.1})
    what = "objective" if bad == "val/acc" else bad
    assert result.state == "failed" and result.error == f"non-finite {what} at epoch 1"
    assert result.diverged_epoch == 1 and result.epochs == 2
    (told,) = study.trials
    assert told.state == TrialState.FAIL
    assert told.user_attrs["diverged_at"] == 1 and told.user_attrs["error"] == result.error


def test_pruning_reports_each_epoch_and_a_pruned_run_is_told_pruned(tmp_path: Path) -> None:
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    for value in (0.9, 0.8):  # two finished trials that reached 0.9 and 0.8 at epoch 0
        done = study.ask()
        done.report(value, step=0)
        study.tell(done, value)
    trial = study.ask()
    ours = life(tmp_path, trial)
    ours.epoch_end(0, {"val/acc": 0.1, "val/loss": 2.0})
    assert ours.prune(0) is True and ours.stopped and not ours.testable
    result = ours.finish(checkpoint=None)
    assert result.state == "pruned" and result.pruned_epoch == 0
    told = study.trials[-1]
    assert told.state == TrialState.PRUNED and told.intermediate_values == {0: 0.1}
    assert told.user_attrs["pruned_at"] == 0 and told.user_attrs["epochs"] == 1


def test_finish_records_and_tells_once(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    ours = life(tmp_path, trial)
    ours.epoch_end(0, {"val/acc": 0.7, "val/loss": 0.5})
    first = ours.finish(checkpoint=None, evaluated={"test/acc": 0.6}, attrs={"probe": 3})
    again = ours.finish(checkpoint=None, error="too late")  # a population's end, say
    assert again is first and first.state == "complete"
    (told,) = study.trials
    assert told.state == TrialState.COMPLETE and told.value == 0.7
    assert told.user_attrs["test/acc"] == 0.6 and told.user_attrs["probe"] == 3
    assert "error" not in told.user_attrs


def test_any_lightning_module_trains_through_the_lifecycle_callback(tmp_path: Path) -> None:
    """A user's own module, its own validation loop: the best epoch is saved, early stopping
    ends the fit, and the run is scored by its kept epoch."""
    accs = [0.2, 0.6, 0.5, 0.4, 0.3, 0.9]
    es = {"monitor": "val/acc", "patience": 2}
    ours = life(tmp_path, early_stopping=es)
    path = tmp_path / "best.ckpt"
    trainer = fit(Scripted([1.0] * len(accs), accs), LifecycleCallback(ours, path), root=tmp_path)
    assert trainer.current_epoch == 4  # epochs 2 and 3 did not improve on 0.6: stopped
    assert ours.best_epoch == 1 and ours.stopped
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and "state_dict" in saved
    assert ours.finish(checkpoint=path).value == pytest.approx(0.6)


@pytest.mark.parametrize(("checkpoint", "kept"), [("best", 0), ("last", 1)])
def test_the_gaps_are_taken_at_the_kept_epoch(tmp_path: Path, checkpoint: str, kept: int) -> None:
    """gap/acc = train_eval/acc − val/acc and gap/loss = val/loss − train_eval/loss, with the
    validation of the epoch whose weights were evaluated; its val/ece is recorded with them."""
    study = optuna.create_study(direction="maximize")
    ours = life(tmp_path, study.ask(), checkpoint=checkpoint)
    epochs = [(0.7, 0.5, 0.05), (0.6, 0.9, 0.2)]  # val/acc, val/loss, val/ece
    for epoch, (acc, loss, ece) in enumerate(epochs):
        ours.epoch_end(epoch, {"val/acc": acc, "val/loss": loss, "val/ece": ece})
    result = ours.finish(
        checkpoint=None, evaluated={"train_eval/acc": 0.95, "train_eval/loss": 0.1}
    )
    acc, loss, ece = epochs[kept]
    assert result.metrics["gap/acc"] == pytest.approx(0.95 - acc)
    assert result.metrics["gap/loss"] == pytest.approx(loss - 0.1)
    assert result.metrics["val/ece"] == ece
    assert study.trials[0].user_attrs["gap/acc"] == pytest.approx(0.95 - acc)
