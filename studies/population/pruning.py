"""Pruning inside a population: peers at the same epoch count as finished trials.

Optuna's `MedianPruner` (and `PercentilePruner`) compare a trial only with COMPLETE trials, so
within a study's first population nothing could be pruned: every member is still RUNNING. A
population's members all reach epoch s together, so `PeerPruner` shows the pruner, besides the
finished trials, every RUNNING trial that has reported epoch s (its values up to s, as if it had
finished there). Its `n_startup_trials` then counts the trials that reached the epoch.

`HyperbandPruner` (successive halving) already compares with every trial that has reached a
rung, running ones included; `PopulationModule` asks the members best first, so the worst ones
decide against all their peers' values at the rung.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.pruners import BasePruner, PercentilePruner
from optuna.trial import FrozenTrial, TrialState


class PeerPruner(BasePruner):
    """`base`, deciding with the running peers at the same step counted as finished trials."""

    def __init__(self, base: BasePruner) -> None:
        self.base = base

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if isinstance(self.base, PercentilePruner):  # MedianPruner is one
            return self.base.prune(_PeerView(study, trial), trial)  # type: ignore[arg-type]
        return self.base.prune(study, trial)


class _PeerView:
    """The study as the pruner reads it: COMPLETE trials plus the RUNNING peers at the step."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._study, self._trial = study, trial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        step = self._trial.last_step
        if states is None or TrialState.COMPLETE not in states or step is None:
            return trials
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        peers = [
            _finished_at(t, step)
            for t in running
            if t.number != self._trial.number and step in t.intermediate_values
        ]
        return trials + peers


def _finished_at(trial: FrozenTrial, step: int) -> FrozenTrial:
    peer = copy.copy(trial)
    peer.state = TrialState.COMPLETE
    peer.intermediate_values = {s: v for s, v in trial.intermediate_values.items() if s <= step}
    return peer
