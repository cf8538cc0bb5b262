"""Garbage collection between trials: cycles go, only the first trial's survivors freeze, and
leaving the block hands them back to the collector (a library call leaves gc as it found it)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import optuna
import pytest

from regzoo.studies.loop.gc import collect_after_trials


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def finished() -> Iterator[tuple[optuna.Study, optuna.trial.FrozenTrial]]:
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    gc.unfreeze()
    yield study, study.trials[0]
    gc.unfreeze()  # hand this process's objects back to the collector


def cycle() -> weakref.ref[Node]:
    return weakref.ref(Node())


def test_each_call_frees_the_trials_cycles_and_only_the_first_freezes(
    finished: tuple[optuna.Study, optuna.trial.FrozenTrial],
) -> None:
    gc.disable()  # no automatic collection between the cycle's creation and the callback
    try:
        with collect_after_trials() as collect:
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
            del survivor
        assert gc.get_freeze_count() == 0  # the block undid its freeze
    finally:
        gc.enable()


def test_a_freeze_made_by_someone_else_is_left_alone(
    finished: tuple[optuna.Study, optuna.trial.FrozenTrial],
) -> None:
    gc.freeze()
    theirs = gc.get_freeze_count()
    with collect_after_trials() as collect:
        collect(*finished)
        assert gc.get_freeze_count() == theirs  # nothing more frozen by the study
    assert gc.get_freeze_count() == theirs  # and theirs not undone
