"""Garbage collection between trials: cycles go, and only the first trial's survivors freeze,
once per process."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import optuna
import pytest

import studies._gc
from studies._gc import CollectAfterTrial


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def finished() -> Iterator[tuple[optuna.Study, optuna.trial.FrozenTrial]]:
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    yield study, study.trials[0]
    gc.unfreeze()  # hand this process's objects back to the collector


def cycle() -> weakref.ref[Node]:
    return weakref.ref(Node())


def test_each_call_frees_the_trials_cycles_and_only_the_first_freezes(
    finished: tuple[optuna.Study, optuna.trial.FrozenTrial], monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.unfreeze()
    monkeypatch.setattr(studies._gc, "_frozen", False)  # as in a fresh process
    collect = CollectAfterTrial()
    gc.disable()  # no automatic collection between the cycle's creation and the callback
    try:
        first = cycle()
        assert first() is not None
        collect(*finished)
        assert first() is None
        frozen = gc.get_freeze_count()
        assert frozen > 0

        survivor, later = Node(), cycle()
        collect(*finished)
        assert later() is None  # made after the freeze: still collected
        assert gc.get_freeze_count() == frozen  # and the survivor was not frozen
        CollectAfterTrial()(*finished)  # another study in the same process
        assert gc.get_freeze_count() == frozen
        del survivor
    finally:
        gc.enable()
