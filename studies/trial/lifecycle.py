"""A trial's lifecycle: what its epoch metrics decide, from the first epoch to Optuna's state.

    life = Lifecycle(spec, trial)
    for epoch, metrics in enumerate(epochs):
        step = life.epoch_end(epoch, metrics)    # keep this epoch? stop?
        life.report(epoch); life.should_prune(epoch)
    result = life.finish(checkpoint=path, evaluated=kept_metrics)   # recorded and told

One object decides, for a run on its own (driven through Lightning's callback hooks,
`callbacks.LifecycleCallback`) and for each member of a population (fed its own metrics by
`population.module`), in this order each epoch:

1. divergence: the objective, `val/loss` or `train/loss` NaN or infinite fails the run;
2. the kept epoch: the best objective (equal values: the better `objective.tie_break`), or the
   last epoch with `checkpoint: last`; its checkpoint is what the run is scored and tested by;
3. early stopping, with Lightning's `EarlyStopping` criteria (patience, min_delta, mode);
4. pruning: the objective reported to the Optuna trial, then `should_prune`.

`finish` turns what happened into a `RunResult` (with the kept checkpoint's evaluations and the
overfitting they show: `overfitting`), records it on the Optuna trial (user
attributes), tells Optuna its state (`tell`, the one place a result becomes a state), and
closes the run's W&B run with its summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.loggers import WandbLogger
from optuna.pruners import NopPruner
from optuna.trial import TrialState

from regzoo.studies.config.schema import RUN_OBJECTIVES, EarlyStop, StudyConfig
from regzoo.studies.trial import tracking
from regzoo.studies.trial.spec import RunResult, TrialSpec

# Besides the objective: a loss gone NaN or infinite has diverged even while an accuracy
# objective stays finite (the argmax of NaN logits is still a class).
WATCHED_LOSSES = ("val/loss", "train/loss")
# The user attributes a run's record holds besides its metrics (`record`).
TIE_BREAK_ATTR = "tie_break"  # the objective's tie_break metric at the kept epoch
PRUNED_ATTR = "pruned_at"  # the 0-based epoch a pruned run ended at
DIVERGED_ATTR = "diverged_at"  # the 0-based epoch a run's objective or loss became non-finite
# The gaps between the training split evaluated like validation (`TRAIN_EVAL`) from the kept
# checkpoint and the kept epoch's validation: > 0 where the run overfits.
GAPS = {"gap/acc": ("train_eval/acc", "val/acc"), "gap/loss": ("val/loss", "train_eval/loss")}


@dataclass(frozen=True)
class Step:
    """What one epoch decided: keep its weights as the run's checkpoint; stop the run."""

    keep: bool
    stop: bool


class EarlyStopping:
    """Lightning's `EarlyStopping` criteria on one metric's values, epoch by epoch: stop when
    the metric is not finite, or has not improved by more than `min_delta` for `patience`
    epochs in a row."""

    def __init__(self, es: EarlyStop) -> None:
        self.monitor, self.patience, self.min_delta = es.monitor, es.patience, es.min_delta
        self.sign = 1.0 if es.resolved_mode == "max" else -1.0
        self.best = -math.inf
        self.wait = 0

    def update(self, value: float) -> bool:
        """Take one epoch's value; True when training should stop."""
        if not math.isfinite(value):
            return True
        if self.sign * value - self.min_delta > self.best:
            self.best, self.wait = self.sign * value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


class Lifecycle:
    """One run's decisions and record; see the module docstring."""

    def __init__(
        self,
        spec: TrialSpec,
        trial: optuna.Trial | None,
        *,
        wandb: WandbLogger | None = None,
        max_epochs: int | None = None,
    ) -> None:
        """The run of `spec`, reporting to `trial` (None: a plain run).

        Args:
            wandb: The run's W&B run, closed by `finish` with the run's summary.
            max_epochs: The last epoch, where the run itself ends it (a population's member
                whose Trainer trains longer); None where its Trainer stops it.
        """
        cfg: StudyConfig = spec.config
        self.spec, self.trial, self.wandb, self.max_epochs = spec, trial, wandb, max_epochs
        self.objective = cfg.objectives[0]  # picks the kept epoch
        self.later = cfg.objectives[1:]  # a multi-objective study's others, told at the end
        self.keep_last = cfg.checkpoint == "last"
        self.early = EarlyStopping(cfg.early_stopping) if cfg.early_stopping else None
        self.prunes = spec.prune and _prunable(trial)
        self.record = tracking.EpochRecord()  # val metrics by epoch: the W&B summary
        self.start = time.perf_counter()
        self.metrics: dict[str, float] = {}  # the last epoch's
        self.epochs = 0
        self.best: float | None = None
        self.best_tie: float | None = None
        self.best_epoch: int | None = None
        self.pruned_epoch: int | None = None
        self.diverged_epoch: int | None = None
        self.diverged_metric: str | None = None
        self.stopped = False
        self.result: RunResult | None = None

    # ---- each epoch -------------------------------------------------------------------------

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> Step:
        """Take epoch `epoch`'s metrics (0-based); whether to keep its weights, and to stop."""
        self.epochs, self.metrics = epoch + 1, metrics
        self.record.epochs[epoch] = {k: v for k, v in metrics.items() if k.startswith("val/")}
        watched = [k for k in (self.objective.metric, *WATCHED_LOSSES) if k in metrics]
        bad = next((k for k in watched if not math.isfinite(metrics[k])), None)
        if bad is not None:
            self.diverged_epoch, self.diverged_metric, self.stopped = epoch, bad, True
            return Step(keep=False, stop=True)
        keep = self._keeps(epoch, metrics)
        early = self.early
        if early is not None:
            if early.monitor not in metrics:
                raise RuntimeError(_missing("early_stopping.monitor", early.monitor, metrics))
            self.stopped = early.update(metrics[early.monitor])
        if self.max_epochs is not None and self.epochs >= self.max_epochs:
            self.stopped = True
        return Step(keep=keep, stop=self.stopped)

    def _keeps(self, epoch: int, metrics: dict[str, float]) -> bool:
        objective = self.objective
        score = metrics.get(objective.metric)
        if score is None:
            return self.keep_last
        for goal in self.later:
            if goal.metric not in RUN_OBJECTIVES and goal.metric not in metrics:
                raise RuntimeError(_missing("objective", goal.metric, metrics))
        tie = None
        if objective.tie_break is not None:
            if objective.tie_break not in metrics:
                raise RuntimeError(_missing("objective.tie_break", objective.tie_break, metrics))
            tie = metrics[objective.tie_break]
        keep = self.keep_last or self.best is None
        if not keep:
            assert self.best is not None
            sign = 1 if objective.direction == "maximize" else -1
            keep = sign * score > sign * self.best
            if not keep and score == self.best and tie is not None and self.best_tie is not None:
                tie_sign = 1 if objective.tie_break_maximize else -1
                keep = tie_sign * tie > tie_sign * self.best_tie
        if keep:
            self.best, self.best_tie, self.best_epoch = score, tie, epoch
        return keep

    def report(self, epoch: int) -> float | None:
        """Report the epoch's objective to the trial's pruner; the value reported, if any."""
        value = self.metrics.get(self.objective.metric)
        if not self.prunes or self.diverged_epoch is not None or value is None:
            return None
        assert self.trial is not None
        self.trial.report(value, step=epoch)
        return value

    def should_prune(self, epoch: int) -> bool:
        """Ask the pruner about the reported epoch; a pruned run stops here."""
        if not self.prunes or self.diverged_epoch is not None or self.pruned_epoch is not None:
            return False
        if self.objective.metric not in self.metrics:
            return False
        assert self.trial is not None
        if self.trial.should_prune():
            self.pruned_epoch, self.stopped = epoch, True
        return self.pruned_epoch is not None

    def prune(self, epoch: int) -> bool:
        """`report`, then `should_prune`: a run on its own."""
        self.report(epoch)
        return self.should_prune(epoch)

    @property
    def kept_epoch(self) -> int | None:
        """The 0-based epoch whose weights the run keeps (None: none yet)."""
        if self.keep_last and self.epochs:
            return self.epochs - 1
        return self.best_epoch

    @property
    def evaluable(self) -> bool:
        """Whether the kept checkpoint is evaluated on the training split: not diverged
        (a pruned run is, to show how much it overfit where it stopped). Known on every DDP
        rank, as `testable` is."""
        return self.diverged_epoch is None

    @property
    def testable(self) -> bool:
        """Whether the kept checkpoint is tested: neither pruned nor diverged."""
        return self.pruned_epoch is None and self.diverged_epoch is None

    # ---- the end ----------------------------------------------------------------------------

    def finish(
        self,
        *,
        checkpoint: Path | None,
        evaluated: dict[str, float] | None = None,
        error: str | None = None,
        attrs: dict[str, Any] | None = None,
        parameters: int | None = None,
    ) -> RunResult:
        """The run's result, recorded on its trial, told to Optuna, its W&B run closed.

        Args:
            evaluated: The kept checkpoint's metrics (`test/...`, `train_eval/...`); the result's
                metrics add the `overfitting` they show.
            error: Why the run failed, where it raised (a diverged run's reason is its own).
            attrs: More user attributes for the trial (an experiment's probe summaries).
            parameters: The model's trainable parameter count: the `model/params` objective.
        """
        if self.result is not None:  # already told: a population member that ended early
            return self.result
        state = "complete"
        if error is None and self.diverged_epoch is not None:
            error = f"non-finite {self._diverged_what()} at epoch {self.diverged_epoch}"
        if error is not None:
            state = "failed"
        elif self.pruned_epoch is not None:
            state = "pruned"
        value = self.best if self.best is not None else self.metrics.get(self.objective.metric)
        metrics = dict(evaluated or {})
        metrics |= self.overfitting(metrics)
        if self.best_tie is not None:
            metrics[TIE_BREAK_ATTR] = self.best_tie
        seconds = round(time.perf_counter() - self.start, 3)
        result = RunResult(
            state=state,  # type: ignore[arg-type]
            values=[math.nan if value is None else float(value), *self._later(seconds, parameters)],
            seconds=seconds,
            epochs=self.epochs,
            checkpoint=checkpoint if checkpoint is not None and checkpoint.is_file() else None,
            metrics=metrics,
            pruned_epoch=self.pruned_epoch,
            diverged_epoch=self.diverged_epoch,
            error=error,
            number=None if self.trial is None else int(self.trial.number),
        )
        self.result = result
        try:
            if self.trial is not None:
                record(self.trial, result, {**self.spec.attrs, **(attrs or {})})
                tell(self.trial, result)
        finally:
            tracking.finish(self.wandb, self._summary(result), state=state)
        return result

    def overfitting(self, evaluated: dict[str, float]) -> dict[str, float]:
        """The kept epoch's `val/ece`, and the gaps (`GAPS`) between the training split
        evaluated from the kept checkpoint and the kept epoch's validation: `gap/acc` =
        train_eval/acc − val/acc, `gap/loss` = val/loss − train_eval/loss, both > 0 where the
        run fits its training data better than held-out data. The checkpoint is saved after its
        epoch's validation, so both sides are the same weights."""
        epoch = self.kept_epoch
        val = self.record.epochs.get(epoch, {}) if epoch is not None else {}
        found = {**val, **evaluated}
        out = {"val/ece": val["val/ece"]} if "val/ece" in val else {}
        for gap, (high, low) in GAPS.items():
            if high in found and low in found:
                out[gap] = found[high] - found[low]
        return out

    def _later(self, seconds: float, parameters: int | None) -> list[float]:
        """The later objectives' values: a validation metric at the kept epoch (the first
        objective's choice), the parameter count, the run's training seconds (NaN: unknown, a
        run that did not complete, whose values Optuna is not told)."""
        epoch = self.kept_epoch
        kept = self.record.epochs.get(epoch, {}) if epoch is not None else {}
        run = {"model/params": parameters, "run/seconds": seconds}
        values = [run[g.metric] if g.metric in run else kept.get(g.metric) for g in self.later]
        return [math.nan if v is None else float(v) for v in values]

    def _diverged_what(self) -> str:
        what = self.diverged_metric
        return "objective" if what in (None, self.objective.metric) else str(what)

    def _summary(self, result: RunResult) -> dict[str, Any]:
        objective = self.objective
        summary: dict[str, Any] = {"epochs": result.epochs}
        if result.error is None or result.diverged_epoch is not None:
            summary["best/" + objective.metric] = result.value
            summary |= {k: v for k, v in result.metrics.items() if k != TIE_BREAK_ATTR}
            if self.best_tie is not None:
                summary[f"best/{objective.tie_break}"] = self.best_tie
        if result.pruned_epoch is not None:
            summary[PRUNED_ATTR] = result.pruned_epoch
        summary |= self.record.summary(
            objective.metric,
            objective.direction,
            tie_break=objective.tie_break,
            tie_max=objective.tie_break_maximize,
        )
        if self.keep_last:
            summary["best_epoch"] = max(result.epochs - 1, 0)
        summary["seconds"] = result.seconds
        if result.error is not None:
            summary["error"] = result.error
        return summary


def record(trial: optuna.Trial, result: RunResult, attrs: dict[str, Any]) -> None:
    """A run's record on its trial (user attributes): epochs, seconds, checkpoint, its
    metrics, `pruned_at` / `diverged_at` / `error` where they apply, and `attrs`."""
    values: dict[str, Any] = {
        "epochs": result.epochs,
        "seconds": result.seconds,
        **({"checkpoint": str(result.checkpoint)} if result.checkpoint is not None else {}),
        **result.metrics,
        **attrs,
    }
    if result.pruned_epoch is not None:
        values[PRUNED_ATTR] = result.pruned_epoch
    if result.diverged_epoch is not None:
        values[DIVERGED_ATTR] = result.diverged_epoch
    if result.error is not None:
        values["error"] = result.error
    for key, value in values.items():
        trial.set_user_attr(key, value)


def tell(trial: optuna.Trial, result: RunResult) -> None:
    """Tell Optuna how the run ended: the one place a result becomes a trial state."""
    state = {
        "complete": TrialState.COMPLETE,
        "pruned": TrialState.PRUNED,
        "failed": TrialState.FAIL,
    }[result.state]
    values = result.values if state == TrialState.COMPLETE else None
    trial.study.tell(trial, values, state=state, skip_if_finished=True)


def error_text(exc: BaseException) -> str:
    """How a run's error is recorded (Optuna's user attr, the run's summary): one line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGINT)"
    return f"{type(exc).__name__}: {exc}"[:1000]


def failed(spec: TrialSpec, trial: optuna.Trial | None, exc: BaseException) -> RunResult:
    """The result of a run that raised before its lifecycle began, recorded and told."""
    return Lifecycle(spec, trial).finish(checkpoint=None, error=error_text(exc))


def _prunable(trial: optuna.Trial | None) -> bool:
    """Whether a run's epochs are reported to its Optuna trial: not without a trial, nor under a
    `NopPruner` (the lecture's experiments), where nothing reads the values and one storage
    commit per member and epoch was half of a 1000-epoch population's time (the curves are in
    each run's metrics.csv), nor in a multi-objective study, which Optuna neither prunes nor
    lets report (its config has no pruner: `StudyConfig._objectives`)."""
    if trial is None or len(trial.study.directions) > 1:
        return False
    return not isinstance(trial.study.pruner, NopPruner)


def _missing(option: str, name: str, metrics: dict[str, float]) -> str:
    return f"{option}={name!r} is not a logged metric; logged: {', '.join(sorted(metrics))}"
