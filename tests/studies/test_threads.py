"""`executor.threads`: the thread count chosen from the work and the cores, and its overrides."""

from __future__ import annotations

import doctest
import os
from typing import Any

import pytest
import torch

from regzoo import create_model
from regzoo._checks import UserError
from regzoo.studies import load_config
from regzoo.studies.executor import threads
from regzoo.studies.executor.threads import (
    ENV,
    SPLIT_WORK,
    ThreadChoice,
    ThreadsError,
    choose_threads,
    fixed_work,
    macs_per_sample,
    step_work,
    threads_for,
    usable_cores,
)
from tests.conftest import DEFAULT_CONFIG

# Multiply-adds a sample as `macs_per_sample` counts them (test_the_work_is_counted_on_the_model)
TOY_MLP = {"macs_per_sample": 128, "batch_size": 100}  # 2-D points, hidden 32
DIGITS_FNN = {"macs_per_sample": 2368, "batch_size": 64}  # hidden (32,)
OLD_DEFAULT_CNN = {"macs_per_sample": 91776, "batch_size": 64}  # [16, 32]: 1 won
DEFAULT_CNN = {"macs_per_sample": 347392, "batch_size": 64}  # [32, 64]: 2 won

DIGITS = {"input_shape": (1, 8, 8), "num_classes": 10, "normalize": "standard"}
# The models behind them, as create_model builds them (the default study's CNN: its config).
MODELS: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
    (TOY_MLP, "fnn", {"input_shape": (2,), "num_classes": 2, "hidden": (32,)}),
    (DIGITS_FNN, "fnn", {"input_shape": (64,), "num_classes": 10, "hidden": (32,)}),
    (OLD_DEFAULT_CNN, "cnn", {**DIGITS, "channels": [16, 32], "hidden": [64]}),
    (DEFAULT_CNN, "cnn", {**DIGITS, "channels": [32, 64], "hidden": [128], "batchnorm": True}),
]


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.mark.parametrize(("work", "name", "hparams"), MODELS, ids=["toy", "fnn", "cnn16", "cnn32"])
def test_the_work_is_counted_on_the_model(work: dict, name: str, hparams: dict) -> None:
    model = create_model(name, **hparams)
    assert model.training
    assert macs_per_sample(model, hparams["input_shape"]) == work["macs_per_sample"]
    assert model.training  # left as it was


def test_the_default_cnns_land_on_the_measured_sides_of_the_split() -> None:
    """The earlier default (CNN [16, 32]) ran faster on one thread, the current one on two."""
    assert step_work(**OLD_DEFAULT_CNN) < SPLIT_WORK < step_work(**DEFAULT_CNN)
    assert fixed_work(load_config(DEFAULT_CONFIG)) == (DEFAULT_CNN["macs_per_sample"], 64)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_recurrent_layer_counts_its_weights_once_a_sample(cell: str) -> None:
    """torch counts a GRU's steps but not an LSTM's: every cell counts as its parameters."""
    model = create_model("rnn", input_shape=(3, 20), num_classes=4, cell=cell, hidden_size=8)
    recurrent = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.RNNBase)
        for p in m.parameters()
    )
    assert macs_per_sample(model, (3, 20)) == recurrent + 8 * 4  # the head: 8 -> 4


@pytest.mark.parametrize(
    ("work", "millions"), [(TOY_MLP, "0.013"), (DIGITS_FNN, "0.15"), (OLD_DEFAULT_CNN, "5.9")]
)
def test_work_too_small_to_split_gets_one_thread(work: dict, millions: str) -> None:
    choice = choose_threads(**work, cores=2)
    assert choice == ThreadChoice(
        1, f"1 of 2 cores: {millions} M multiply-adds a batch is too small to split"
    )


def test_the_default_cnn_gets_every_core() -> None:
    choice = choose_threads(**DEFAULT_CNN, cores=2)
    assert choice == ThreadChoice(2, "2 cores: 22 M multiply-adds a batch")
    assert choose_threads(**DEFAULT_CNN, cores=16).threads == 16


def test_a_large_population_of_small_models_gets_every_core() -> None:
    assert choose_threads(**DIGITS_FNN, population=4, cores=2).threads == 1
    choice = choose_threads(**DIGITS_FNN, population=256, cores=2)
    assert choice == ThreadChoice(2, "2 cores: 39 M multiply-adds a batch, population 256")


def test_unknown_work_counts_as_large_and_one_core_is_one_thread() -> None:
    choice = choose_threads(macs_per_sample=None, batch_size=8, cores=4)
    assert choice == ThreadChoice(4, "4 cores: work not measured")
    choice = choose_threads(**DEFAULT_CNN, cores=1)
    assert choice == ThreadChoice(1, "1 core: 22 M multiply-adds a batch")


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
