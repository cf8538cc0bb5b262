"""Garbage collection between trials, at the cost of the trial's own objects only.

A finished trial leaves reference cycles behind (a Trainer, its loops and callbacks refer to
each other), so the study collects after each one, as Optuna's `gc_after_trial=True` does. But a
full collection walks every object the interpreter tracks: with torch, Lightning, Optuna and
W&B imported that is ~460k objects and ~240 ms, a fifth of a digits trial
(`python -m benchmarks.workers --profile`). After the first trial, whose fit has imported
everything a fit needs, the survivors are frozen out of the collector's view (`gc.freeze`, once
per block), so later collections walk only what was made since. Leaving the block unfreezes
them: a library call leaves the collector as it found it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


class CollectAfterTrial:
    """Called after each job (any arguments: an Optuna study callback too), inside
    `collect_after_trials()`, which undoes its freeze."""

    def __init__(self) -> None:
        self.froze = False

    def __call__(self, *_: object) -> None:
        gc.collect()
        if not self.froze and gc.get_freeze_count() == 0:
            gc.freeze()  # the modules and caches the first trial brought in, not its garbage
            self.froze = True


@contextmanager
def collect_after_trials() -> Iterator[CollectAfterTrial]:
    """The collector of one loop over jobs; on exit, what it froze is unfrozen."""
    callback = CollectAfterTrial()
    try:
        yield callback
    finally:
        if callback.froze:
            gc.unfreeze()
