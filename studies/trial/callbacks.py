"""Lightning callbacks a trial needs: its lifecycle (the kept checkpoint, early stopping,
pruning), live progress, Ctrl-C at batch ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from regzoo.studies.trial.lifecycle import Lifecycle
from regzoo.studies.trial.signals import raise_if_swallowed


class LifecycleCallback(Checkpoint):
    """Drives a run's `Lifecycle` from Lightning's public hooks, so that any LightningModule
    trains through it: after each training epoch (its validation has run; its epoch-level train
    metrics are in `callback_metrics`), the lifecycle decides; a kept epoch is saved with
    `trainer.save_checkpoint` to `path`; a stop, an early stop or a prune ends the fit.

    A `Checkpoint`, so that Lightning calls it after the module's own `on_train_epoch_end` (a
    metric logged there counts) and adds no checkpoint callback of its own. Under DDP only the
    rank that owns the trial decides; its decision and its checkpoint path are broadcast, so
    every rank saves, stops and tests alike.
    """

    def __init__(self, life: Lifecycle, path: Path) -> None:
        self.life, self.path = life, path
        self.kept = False  # whether an epoch was saved, on every rank

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.path = Path(trainer.strategy.broadcast(str(self.path), src=0))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch, life = trainer.current_epoch, self.life
        decision: tuple[bool, bool, int | None, int | None] = (False, False, None, None)
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            step = life.epoch_end(epoch, metrics)
            if not step.stop:
                life.prune(epoch)
            decision = (step.keep, life.stopped, life.pruned_epoch, life.diverged_epoch)
        keep, stop, life.pruned_epoch, life.diverged_epoch = trainer.strategy.broadcast(
            decision, src=0
        )
        if keep:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.kept = True
        if stop:
            trainer.should_stop = True


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
