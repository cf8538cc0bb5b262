"""`PopulationModule`: a zoo `Population` whose members are runs, each with its own lifecycle.

The batched training (the stacked members, their optimizers and schedules, validation on the
batches given, members leaving the batch) is `regzoo.zoo.Population`'s. After each epoch this
subclass feeds every member's metrics to that member's own `Lifecycle`, the object that decides
for a run on its own too: divergence, the kept epoch, early stopping, pruning. Pruning asks the
members best first, so the worst ones decide against all their peers (`population.pruning`).
A member that ends (pruned, stopped early, diverged, at its own `max_epochs`) is finished at
once: its kept state written as a checkpoint, tested, recorded and told to Optuna, while the
others train on. Its probes see it through a `MemberView`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from regzoo.datamodules import train_eval_batches
from regzoo.studies.trial.lifecycle import Lifecycle
from regzoo.studies.trial.spec import TRAIN_EVAL, RunResult, TrialSpec
from regzoo.studies.trial.train import log_kept, probe_attrs, trainable_parameters
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.metrics import evaluate
from regzoo.zoo.population import Population, StackedModels
from regzoo.zoo.population.module import Augment, Batch


@dataclass
class Member:
    """One member: its run's spec and lifecycle, its model (the checkpoint's format), its own
    augmentation, `metrics.csv`, probes, and the state of its kept epoch."""

    spec: TrialSpec
    life: Lifecycle
    model: Classifier
    augment: Augment | None
    csv: CSVLogger
    max_epochs: int
    probes: list[Any] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def checkpoint(self) -> Path:
        name = "last.ckpt" if self.spec.config.checkpoint == "last" else "best.ckpt"
        return self.spec.run_dir / name

    def finish(self, data: Any) -> RunResult:
        """Write the kept state as the member's checkpoint, evaluate it on the training split
        unless the run diverged and test it unless it was pruned too, as a run on its own is
        (`trial.train`); its metrics.csv gets the final row; its lifecycle records and tells
        the result."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            save_checkpoint(self.model, self.checkpoint, epoch=self.life.best_epoch or 0)
        evaluated = {}
        if self.life.evaluable and self.checkpoint.is_file():
            evaluated = evaluate(self.model, train_eval_batches(data), TRAIN_EVAL)
            if self.life.testable:
                evaluated |= evaluate(self.model, data.test_dataloader(), "test")
        result = self.life.finish(
            checkpoint=self.checkpoint,
            evaluated=evaluated,
            attrs=probe_attrs(self.probes),
            parameters=trainable_parameters(self.model),
        )
        log_kept([self.csv], self.life, result)
        self.csv.save()
        return result


@dataclass
class MemberView:
    """One member as its probes see it, at the hook being called.

    A probe defines any of these methods, each called with the member's view: `member_fit_start`
    (the initial weights), `member_step` (after each optimizer step, with `grads` set: the
    member's gradients of its loss, penalty included, before clipping), `member_epoch_end` (after
    the epoch's bookkeeping; `lr` is still the rate the epoch trained with) and `member_end`
    (after its last epoch: when it stops, or when training ends). `model()` and `state_dict()`
    copy the member's current weights out of the stack, so only a probe that calls them pays.
    """

    module: PopulationModule
    row: int  # the member's row in the stack
    # `stack.params` order; a member narrower than the stack sees its padding's zeros.
    grads: list[torch.Tensor] = field(default_factory=list)
    _model: Classifier | None = field(default=None, repr=False)

    @property
    def member(self) -> Member:
        return self.module.runs[self.module.active[self.row]]

    @property
    def run_dir(self) -> Path:
        return self.member.spec.run_dir

    @property
    def epoch(self) -> int:
        """The current epoch, 0-based (at `member_epoch_end`: the one just trained)."""
        return int(self.module.trainer.current_epoch)

    @property
    def datamodule(self) -> Any:
        return self.module.data

    @property
    def metrics(self) -> dict[str, float]:
        """The member's metrics of the last finished epoch (`val/loss`, `train/acc`, ...)."""
        return self.member.life.metrics

    @property
    def lr(self) -> float:
        return float(self.module.optim.lr[self.row])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.stack.member_state_dict(self.row)

    def model(self) -> Classifier:
        """The member's `Classifier`, its current weights loaded (once per view: the probes
        of one member at one hook share it)."""
        if self._model is None:
            self._model = self.module.stack.load_into(self.row, self.member.model)
        return self._model


class PopulationModule(Population):
    """The members of a `StackedModels` trained together, each a run; see the module docstring."""

    def __init__(
        self, members: list[Member], stack: StackedModels, data: Any, val: Iterable[Batch]
    ) -> None:
        """The members, their stack, and what they are validated on.

        Args:
            data: The datamodule the members train on (what probes read as `datamodule`).
            val: The validation batches, as the Trainer's `limit_val_batches` would cut them:
                every member is validated on them at the end of each epoch.
        """
        super().__init__(
            [m.model for m in members],
            max_epochs=[m.max_epochs for m in members],
            augment=[m.augment for m in members],
            val=val,
            log_members=False,  # each member's metrics go to its own loggers
            stack=stack,
        )
        self.data = data
        self.runs = members
        self.results: dict[int, RunResult] = {}  # members finished so far, by index
        self._step_probes = any(hasattr(p, "member_step") for m in members for p in m.probes)

    def members_step(self, grads: dict[str, torch.Tensor]) -> None:
        if self._step_probes:
            self._probe_step(list(grads.values()))

    def members_epoch_end(self, epoch: int, metrics: dict[int, dict[str, float]]) -> None:
        step = max(self.steps - 1, 0)
        for i, values in metrics.items():
            m = self.runs[i]
            m.csv.log_metrics({"epoch": epoch, **values}, step=step)
            if m.life.wandb is not None:
                m.life.wandb.log_metrics({"epoch": epoch, **values}, step=step)
            if m.life.epoch_end(epoch, values).keep:
                m.best_state = self.stack.member_state_dict(self.active.index(i))
        self._prune(epoch, list(metrics))
        self._probe("member_epoch_end")
        ending = [i for i in metrics if self.runs[i].life.stopped or i in self.stopped]
        self._probe("member_end", only=ending)  # before they leave the stack
        for i in ending:
            self.stop(i)
            self.results[i] = self.runs[i].finish(self.data)

    def _prune(self, epoch: int, members: list[int]) -> None:
        """Report every member's objective, then ask the pruner, best member first."""
        reported = {i: self.runs[i].life.report(epoch) for i in members}
        scored = [i for i in members if reported[i] is not None]
        maximize = self.runs[members[0]].life.objective.direction == "maximize" if members else True
        sign = -1 if maximize else 1
        for i in sorted(scored, key=lambda i: sign * float(reported[i] or math.nan)):
            self.runs[i].life.should_prune(epoch)

    # ---- member probes (MemberView) ---------------------------------------------------------

    def on_train_start(self) -> None:
        self._probe("member_fit_start")

    def on_train_end(self) -> None:
        self._probe("member_end")  # the members still training; ended ones were called

    def _probe(self, hook: str, *, only: Sequence[int] | None = None) -> None:
        for row, i in enumerate(self.active):
            if only is not None and i not in only:
                continue
            for probe in self.runs[i].probes:
                call = getattr(probe, hook, None)
                if call is not None:
                    call(MemberView(self, row))

    def _probe_step(self, grads: Sequence[torch.Tensor]) -> None:
        for row, i in enumerate(self.active):
            probes = [p for p in self.runs[i].probes if hasattr(p, "member_step")]
            if probes:
                view = MemberView(self, row, [g[row] for g in grads])  # (K, ...) -> member's
                for probe in probes:
                    probe.member_step(view)


def save_checkpoint(model: Classifier, path: Path, *, epoch: int) -> None:
    """`model` in the checkpoint format Lightning's `trainer.save_checkpoint` writes for a run
    on its own (what `load_model`, export and the report read), written whole or not at all."""
    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hyper_parameters": dict(model.hparams),
    }
    model.on_save_checkpoint(checkpoint)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
