"""What the executor is handed and what it hands back: a trial specification and its result.

Both are plain data (picklable, no open connections), so a specification travels to a fresh
worker interpreter and a result travels back. A specification names its Optuna trial by
storage, study and number (`TrialRef`); whoever trains it opens that trial where it trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from regzoo.studies.config.schema import StudyConfig

State = Literal["complete", "pruned", "failed"]
# A run's final metrics (`RunResult.metrics`) besides the test's: the training split evaluated
# like validation (eval mode, no augmentation) from the kept checkpoint, and its gaps to the
# kept epoch's validation (`Lifecycle.overfitting`).
TRAIN_EVAL = "train_eval"
KEPT_PREFIXES = (f"{TRAIN_EVAL}/", "gap/")  # what a run's metrics.csv gets at its kept epoch
# Every final metric a run's record holds, as tables list them: the test, the overfitting view.
FINAL_PREFIXES = ("test/", *KEPT_PREFIXES, "val/ece")


@dataclass(frozen=True)
class TrialRef:
    """An Optuna trial by address: what a worker process opens to report, prune and tell."""

    storage: str
    study: str
    number: int


@dataclass(frozen=True)
class ProbeRef:
    """The probes that watch a run, built where it trains: `factory(name, config)`, the
    factory by import path (`package.module:function`), as a lecture experiment names its
    setting's probes."""

    factory: str
    name: str


@dataclass
class TrialSpec:
    """One training run: the config and sampled parameters, its folder, seed and run name.

    Args:
        config: The run's own config: its objective, early stopping, `max_epochs`, W&B and
            checkpoint choice.
        params: Dotted keys sampled over `base`'s fixed values (`config.search.split_params`).
        base: The config whose fixed values `params` override, where it is not `config` (a
            lecture experiment's population shares one base among settings of their own).
        trial: The Optuna trial the run reports to and is told as; None for a plain run.
        attrs: User attributes to record on the trial before it is told.
        probes: The experiment setting whose probes watch the run.
        prune: Whether the run reports its epochs to the trial's pruner.
        batchable: Whether the run may train as a member of a population.
    """

    config: StudyConfig
    params: dict[str, Any]
    run_dir: Path
    seed: int
    run_name: str
    base: StudyConfig | None = None
    trial: TrialRef | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    probes: ProbeRef | None = None
    prune: bool = True
    batchable: bool = True

    @property
    def fixed(self) -> StudyConfig:
        """The config whose fixed values `params` override."""
        return self.base or self.config


@dataclass
class RunResult:
    """What one run produced, whichever way it trained.

    `epochs` counts the epochs trained; `pruned_epoch` and `diverged_epoch` are the 0-based
    index of the epoch that ended the run (the `epoch` column of its metrics.csv).
    `metrics` is open: the test metrics, the tie-break value at the kept epoch, and whatever
    later work adds, each recorded on the trial as a user attribute.
    """

    state: State
    values: list[float]
    seconds: float
    epochs: int
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    pruned_epoch: int | None = None
    diverged_epoch: int | None = None
    error: str | None = None
    number: int | None = None  # the Optuna trial's, where it has one

    @property
    def value(self) -> float:
        """The first (in a single-objective study, the only) objective value."""
        return self.values[0]
