"""Lightning callbacks a trial needs: Optuna pruning, the tie-breaking checkpoint, live
progress, Ctrl-C at batch ends."""

from __future__ import annotations

import math
import operator
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor

from regzoo.studies.trial.signals import raise_if_swallowed


class OptunaPruning(L.Callback):
    """Report the objective after each validation epoch; stop training when Optuna prunes.

    Written for DDP from the start: only the rank that owns the trial reports and asks; its
    decision is broadcast, so every rank stops at the same epoch. Stopping (rather than raising
    inside `fit`) lets checkpoints and loggers close normally; the runner raises
    `optuna.TrialPruned` after `fit` returns.
    """

    # Besides the objective: a loss gone NaN or infinite has diverged even while an accuracy
    # objective stays finite (the argmax of NaN logits is still a class).
    LOSSES = ("val/loss", "train/loss")

    def __init__(self, trial: optuna.trial.BaseTrial | None, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self.nonfinite_at: int | None = None
        self.nonfinite_metric: str | None = None  # which metric, on the rank that owns the trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        decision = 0  # 0: go on, 1: pruned, 2: objective or a loss not finite
        if self.trial is not None and trainer.is_global_zero:
            metrics = trainer.callback_metrics
            watched = [m for m in (self.monitor, *self.LOSSES) if m in metrics]
            self.nonfinite_metric = next(
                (m for m in watched if not math.isfinite(float(metrics[m]))), None
            )
            if self.nonfinite_metric is not None:
                decision = 2
            elif self.monitor in metrics:
                self.trial.report(float(metrics[self.monitor]), step=epoch)
                decision = int(self.trial.should_prune())
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision == 1:
            self.pruned_at = epoch
        elif decision == 2:
            self.nonfinite_at = epoch
        if decision:
            trainer.should_stop = True


class TieBreakCheckpoint(ModelCheckpoint):
    """The best epoch's checkpoint, where an epoch equal to the best on the monitored metric
    replaces it when its `tie_break` metric is better.

    A saturated objective (every late epoch at the same validation accuracy) otherwise keeps the
    first epoch that reached it, however much less confident than the later ones. Keeps one
    checkpoint (`save_top_k=1`); `best_tie_break` is the `tie_break` value of the kept epoch.
    """

    def __init__(self, *, tie_break: str, tie_break_maximize: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tie_break = tie_break
        self._better = operator.gt if tie_break_maximize else operator.lt
        self.best_tie_break: float | None = None

    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        """Lightning's decision, or on a tie with the kept epoch whether `tie_break` improved.

        Lightning saves the epoch whenever this says True, so the kept epoch's `tie_break` value
        is taken here.
        """
        save = super().check_monitor_top_k(trainer, current)
        if current is None:
            return save
        metrics = trainer.callback_metrics
        if self.tie_break not in metrics:
            raise MisconfigurationException(
                f"objective.tie_break={self.tie_break!r} is not a logged metric; logged: "
                f"{', '.join(sorted(metrics))}"
            )
        tie = float(metrics[self.tie_break])
        if not save and self.best_model_score is not None and self.best_tie_break is not None:
            tied = bool(current == self.best_model_score)
            improved = tied and bool(self._better(tie, self.best_tie_break))
            save = trainer.strategy.reduce_boolean_decision(improved)
        if save:
            self.best_tie_break = tie
        return save


class EpochProgress(L.Callback):
    """Advance a rich progress task by one epoch, showing the latest validation metrics."""

    def __init__(self, progress: Any, task: Any, metrics: tuple[str, ...]) -> None:
        self.progress, self.task, self.metrics = progress, task, metrics

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        shown = " ".join(
            f"{m}={float(trainer.callback_metrics[m]):.4f}"
            for m in self.metrics
            if m in trainer.callback_metrics
        )
        self.progress.update(self.task, completed=trainer.current_epoch + 1, metrics=shown)


class SwallowedInterrupt(L.Callback):
    """Ends the fit at the next batch with a Ctrl-C that a finalizer swallowed (see
    `studies._signals`): Lightning then shuts down as after any Ctrl-C."""

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_swallowed()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise_if_swallowed()
