"""`loop.threads`: the thread count chosen from the work and the cores, and its overrides."""

from __future__ import annotations

import doctest
import os

import pytest
import torch

from regzoo._checks import UserError
from regzoo.studies.loop import threads
from regzoo.studies.loop.threads import (
    ENV,
    ThreadChoice,
    ThreadsError,
    choose_threads,
    threads_for,
    usable_cores,
)

TOY_MLP = {"model": "fnn", "n_parameters": 162, "batch_size": 100}  # 2-D points, hidden 32
DIGITS_FNN = {"model": "fnn", "n_parameters": 2410, "batch_size": 64}  # hidden (32,)
OLD_DEFAULT_CNN = {"model": "cnn", "n_parameters": 13706, "batch_size": 64}  # [16, 32]: 1 won
DEFAULT_CNN = {"model": "cnn", "n_parameters": 53194, "batch_size": 64}  # [32, 64]: 2 won


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.mark.parametrize("work", [TOY_MLP, DIGITS_FNN, OLD_DEFAULT_CNN])
def test_work_too_small_to_split_gets_one_thread(work: dict) -> None:
    choice = choose_threads(**work, cores=2)
    assert choice.threads == 1
    assert (
        choice.reason
        == f"1 of 2 cores: {work['model']}, batch {work['batch_size']} is too small to split"
    )


def test_the_default_cnn_gets_every_core() -> None:
    assert choose_threads(**DEFAULT_CNN, cores=2) == ThreadChoice(2, "2 cores: cnn, batch 64")
    assert choose_threads(**DEFAULT_CNN, cores=16).threads == 16


def test_a_large_population_of_small_models_gets_every_core() -> None:
    assert choose_threads(**DIGITS_FNN, population=4, cores=2).threads == 1
    choice = choose_threads(**DIGITS_FNN, population=256, cores=2)
    assert choice == ThreadChoice(2, "2 cores: fnn, batch 64, population 256")


def test_unknown_size_counts_as_large_and_one_core_is_one_thread() -> None:
    assert choose_threads(model="hub", n_parameters=None, batch_size=8, cores=4).threads == 4
    assert choose_threads(**DEFAULT_CNN, cores=1) == ThreadChoice(1, "1 core: cnn, batch 64")


@pytest.mark.parametrize(
    ("workers", "cores", "share"), [(2, 2, 1), (4, 2, 1), (3, 8, 2), (2, 16, 8)]
)
def test_workers_share_the_cores(workers: int, cores: int, share: int) -> None:
    for work in (TOY_MLP, DEFAULT_CNN):  # whatever the work
        choice = choose_threads(**work, workers=workers, cores=cores)
        assert choice == ThreadChoice(
            share, f"{share} of {cores} cores: {workers} workers share them"
        )


def test_the_cores_default_to_the_usable_ones() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == expected
    assert choose_threads(**DEFAULT_CNN).threads == usable_cores()


def test_an_override_wins_argument_first(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_threads(**TOY_MLP, cores=2, override=2) == ThreadChoice(2, "2 asked for")
    monkeypatch.setenv(ENV, "3")
    assert choose_threads(**TOY_MLP, cores=2) == ThreadChoice(3, f"{ENV}=3")
    assert choose_threads(**DEFAULT_CNN, workers=4, cores=2).threads == 3
    assert choose_threads(**TOY_MLP, cores=2, override=1).threads == 1
    monkeypatch.setenv(ENV, "")  # empty is unset
    assert choose_threads(**TOY_MLP, cores=2).threads == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2x"])
def test_an_invalid_env_value_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV, value)
    with pytest.raises(ThreadsError) as caught:
        choose_threads(**TOY_MLP, cores=2)
    text = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in text
    assert text.startswith(f"{ENV}={value!r} is invalid; allowed: an integer >= 1")


@pytest.mark.parametrize("value", [0, -2, True, 1.0])
def test_an_invalid_override_is_refused(value: object) -> None:
    with pytest.raises(ThreadsError, match="allowed: an integer >= 1"):
        choose_threads(**TOY_MLP, cores=2, override=value)  # type: ignore[arg-type]


def test_threads_for_restores_the_previous_count() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with threads_for(ThreadChoice(other, "test")) as choice:
        assert torch.get_num_threads() == other and choice.threads == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads_for(ThreadChoice(other, "test")):
        raise RuntimeError("a failed trial")
    assert torch.get_num_threads() == before


def test_apply_sets_the_count() -> None:
    before = torch.get_num_threads()
    try:
        threads.apply(ThreadChoice(1, "test"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_module_examples_run() -> None:
    assert doctest.testmod(threads).failed == 0
