"""Garbage collection between trials, at the cost of the trial's own objects only.

A finished trial leaves reference cycles behind (a Trainer, its loops and callbacks refer to
each other), so the study collects after each one, as Optuna's `gc_after_trial=True` does. But a
full collection walks every object the interpreter tracks: with torch, Lightning, Optuna and
W&B imported that is ~460k objects and ~240 ms, a fifth of a digits trial
(`python -m benchmarks.workers --profile`). After the first trial, whose fit has imported
everything a fit needs, the survivors are frozen out of the collector's view (`gc.freeze`, once
per process), so later collections walk only what was made since.
"""

from __future__ import annotations

import gc

import optuna
from optuna.trial import FrozenTrial

_frozen = False  # once per process: a second study in it (a notebook, tests) freezes nothing


class CollectAfterTrial:
    """An Optuna study callback; use it instead of `gc_after_trial=True`."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        global _frozen
        gc.collect()
        if not _frozen:
            gc.freeze()  # the modules and caches the first trial brought in, not its garbage
            _frozen = True
