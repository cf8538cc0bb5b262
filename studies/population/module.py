"""`PopulationModule`: a `Population` whose members are a study's trials.

The batched training (the stacked members, their optimizers and schedules, validation on the
batches given, members leaving the batch) is `regzoo.zoo.Population`'s. This subclass keeps each
member a full trial, through `Population.members_epoch_end`: each member's own metrics are logged
to its own `metrics.csv` and W&B run; a non-finite objective or loss fails that member alone; its
best epoch (ties broken by `objective.tie_break`) or last epoch is kept for its checkpoint; its
own `EarlyStopping` (Lightning's criteria) or its own `max_epochs` may stop it; Optuna may prune
it (`population.pruning`); and its probes see it through a `MemberView`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from optuna.pruners import NopPruner

from regzoo.studies._compat import early_stopping_check
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.population.members import MemberSpec
from regzoo.studies.results import tracking
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.population import Population, StackedModels
from regzoo.zoo.population.module import Batch

# A loss gone NaN or infinite has diverged even while an accuracy objective stays finite.
WATCHED_LOSSES = ("val/loss", "train/loss")


@dataclass
class Member:
    """One member's model, loggers and record of its training so far."""

    spec: MemberSpec
    model: Classifier  # built with the member's hparams; its checkpoint's format
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    csv: CSVLogger
    wandb: WandbLogger | None
    early: EarlyStopping | None
    max_epochs: int | None = None  # its own Trainer's max_epochs, when it stops earlier
    record: tracking.EpochRecord = field(default_factory=tracking.EpochRecord)
    best_score: float | None = None
    best_tie: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    epochs: int = 0  # epochs trained
    pruned_at: int | None = None
    nonfinite_at: int | None = None
    nonfinite_metric: str | None = None
    stopped: bool = False


@dataclass
class MemberView:
    """One member as its probes see it (`MemberSpec.probes`), at the hook being called.

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
        return self.module.trials[self.module.active[self.row]]

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
        return self.member.last_metrics

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
    """Trains the members of a `StackedModels` together, each a trial; see the module docstring."""

    def __init__(
        self,
        cfg: StudyConfig,
        members: list[Member],
        stack: StackedModels,
        data: Any = None,
        val: Iterable[Batch] = (),
    ) -> None:
        """The members, their stack, and what they are validated on.

        Args:
            data: The datamodule the members train on (what probes read as `datamodule`).
            val: The validation batches, as the Trainer's `limit_val_batches` would cut them:
                every member is validated on them at the end of each epoch (`Population`'s
                `val`).
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
        self.cfg = cfg
        self.trials = members
        self._step_probes = any(hasattr(p, "member_step") for m in members for p in m.spec.probes)

    def members_step(self, grads: dict[str, torch.Tensor]) -> None:
        if self._step_probes:
            self._probe_step(list(grads.values()))

    # ---- the end of an epoch: each member's own bookkeeping ---------------------------------

    def members_epoch_end(self, epoch: int, metrics: dict[int, dict[str, float]]) -> None:
        for row, i in enumerate(self.active):
            self._end_epoch(row, epoch, metrics[i])
        self._prune(epoch)
        self._probe("member_epoch_end")
        self._probe("member_end", stopped_only=True)  # before their rows leave the batch
        for i in self.active:
            if self.trials[i].stopped:
                self.stop(i)

    def _end_epoch(self, row: int, epoch: int, metrics: dict[str, float]) -> None:
        m = self.trials[self.active[row]]
        m.epochs = epoch + 1
        m.last_metrics = metrics
        m.record.epochs[epoch] = {k: v for k, v in metrics.items() if k.startswith("val/")}
        step = max(self.steps - 1, 0)
        m.csv.log_metrics({"epoch": epoch, **metrics}, step=step)
        if m.wandb is not None:
            m.wandb.log_metrics({"epoch": epoch, **metrics}, step=step)
        objective = self.cfg.objective.metric
        watched = [k for k in (objective, *WATCHED_LOSSES) if k in metrics]
        bad = next((k for k in watched if not math.isfinite(metrics[k])), None)
        if bad is not None:
            m.nonfinite_at, m.nonfinite_metric, m.stopped = epoch, bad, True
            return
        self._keep_checkpoint(row, epoch, metrics)
        early = m.early
        if early is not None and early.monitor in metrics:
            m.stopped = m.stopped or early_stopping_check(early, metrics[early.monitor])
        m.stopped = m.stopped or self.active[row] in self.stopped  # at its own max_epochs

    def _keep_checkpoint(self, row: int, epoch: int, metrics: dict[str, float]) -> None:
        """The epoch a member is scored and tested by: as `trial.train._checkpoint` keeps it."""
        m = self.trials[self.active[row]]
        objective = self.cfg.objective
        score = metrics.get(objective.metric)
        if score is None:
            return
        tie = metrics.get(objective.tie_break) if objective.tie_break else None
        best = m.best_score
        keep = self.cfg.checkpoint == "last" or best is None
        if best is not None and not keep:
            sign = 1 if objective.direction == "maximize" else -1
            keep = sign * score > sign * best
            if not keep and score == best and tie is not None and m.best_tie is not None:
                tie_sign = 1 if objective.tie_break_maximize else -1
                keep = tie_sign * tie > tie_sign * m.best_tie
        if keep:
            m.best_score, m.best_tie, m.best_epoch = score, tie, epoch
            m.best_state = self.stack.member_state_dict(row)

    def _prune(self, epoch: int) -> None:
        """Report every member's objective, then ask the pruner, best member first: Optuna's
        pruners then compare each member with all its peers at this epoch (see pruning)."""
        objective = self.cfg.objective
        alive = [
            self.trials[i]
            for i in self.active
            if _prunable(self.trials[i].spec.trial) and self.trials[i].nonfinite_at is None
        ]
        scored = [m for m in alive if objective.metric in m.last_metrics]
        for m in scored:
            assert m.spec.trial is not None
            m.spec.trial.report(m.last_metrics[objective.metric], step=epoch)
        sign = -1 if objective.direction == "maximize" else 1
        for m in sorted(scored, key=lambda m: sign * m.last_metrics[objective.metric]):
            assert m.spec.trial is not None
            if m.spec.trial.should_prune():
                m.pruned_at, m.stopped = epoch, True

    # ---- member probes (MemberView) ---------------------------------------------------------

    def on_train_start(self) -> None:
        self._probe("member_fit_start")

    def on_train_end(self) -> None:
        self._probe("member_end")  # the members still training; stopped ones were called

    def _probe(self, hook: str, *, stopped_only: bool = False) -> None:
        for row, i in enumerate(self.active):
            m = self.trials[i]
            if stopped_only and not m.stopped:
                continue
            for probe in m.spec.probes:
                call = getattr(probe, hook, None)
                if call is not None:
                    call(MemberView(self, row))

    def _probe_step(self, grads: Sequence[torch.Tensor]) -> None:
        for row, i in enumerate(self.active):
            probes = [p for p in self.trials[i].spec.probes if hasattr(p, "member_step")]
            if probes:
                view = MemberView(self, row, [g[row] for g in grads])  # (K, ...) -> member's
                for probe in probes:
                    probe.member_step(view)


def _prunable(trial: Any) -> bool:
    """Whether a member's epochs are reported to its Optuna trial: not without a trial, nor
    under a `NopPruner` (the lecture's experiments), where nothing reads the values and one
    storage commit per member and epoch was half of a 1000-epoch population's time (their
    curves are in each member's metrics.csv)."""
    study = getattr(trial, "study", None)
    return trial is not None and not isinstance(getattr(study, "pruner", None), NopPruner)
