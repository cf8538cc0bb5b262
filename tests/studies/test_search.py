"""Search spaces as data: `suggest` driven by FixedTrial and by every real sampler."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from optuna.trial import FixedTrial

from regzoo.studies import StudyConfig, load_config, validate_config
from regzoo.studies.config.search import REGULARIZATIONS, split_params, suggest
from regzoo.studies.executor.samplers import make_pruner, make_sampler
from regzoo.studies.population.pruning import PeerPruner
from tests.conftest import DEFAULT_CONFIG

REGULARIZED: dict[str, Any] = {
    "model.lr": {"float": [1.0e-4, 1.0e-1], "log": True},
    "data.batch_size": {"int": [16, 128], "step": 16},
    "data.train_size": {"int": [100, 1000], "log": True},
    "model.momentum": {"float": [0.5, 0.9], "step": 0.1},
    "model.optimizer": {"choice": ["sgd", "adamw"]},
    "model.regularization": {"choice": list(REGULARIZATIONS)},
    "model.l1": {"float": [1.0e-6, 1.0e-3], "log": True, "when": {"model.regularization": "l1"}},
    "model.l2": {"float": [1.0e-5, 1.0e-1], "log": True, "when": {"model.regularization": "l2"}},
    "model.weight_decay": {
        "float": [1.0e-5, 1.0e-1],
        "log": True,
        "when": {"model.regularization": "weight_decay"},
    },
    "model.init_std": {"float": [0.01, 0.1], "when": {"model.optimizer": ["sgd"]}},
}


def config(search: dict[str, Any], **extra: Any) -> StudyConfig:
    raw = {
        "name": "search",
        "model": {"name": "fnn", "hidden": [32], "l2": 0.5, "weight_decay": 0.5},
        "data": {"name": "digits"},
        "search": search,
        **extra,
    }
    return validate_config(raw)


def fixed(**values: Any) -> dict[str, Any]:
    """Values for every unconditional dimension, `model__x=` overriding `model.x`."""
    base = {"model.lr": 0.01, "data.batch_size": 48, "data.train_size": 300}
    base |= {"model.momentum": 0.7, "model.optimizer": "adamw"}
    return base | {key.replace("__", "."): value for key, value in values.items()}


STRENGTH = {"model.l1": 1e-4, "model.l2": 1e-3, "model.weight_decay": 1e-2}


@pytest.mark.parametrize("kind", REGULARIZATIONS)
def test_the_regularization_type_picks_one_penalty_and_zeroes_the_others(kind: str) -> None:
    cfg = config(REGULARIZED)
    params = suggest(FixedTrial({**fixed(model__regularization=kind), **STRENGTH}), cfg.search)
    assert {k for k in params if k in STRENGTH} == ({f"model.{kind}"} if kind != "none" else set())
    model, _, _ = split_params(cfg, params)
    assert "regularization" not in model  # a selector, never a zoo hparam
    for penalty in ("l1", "l2", "weight_decay"):
        expected = STRENGTH[f"model.{penalty}"] if penalty == kind else 0.0
        assert model[penalty] == expected, penalty  # the fixed l2/weight_decay 0.5 are replaced


def test_fixed_trial_values_pass_through_and_conditions_apply() -> None:
    cfg = config(REGULARIZED)
    params = suggest(FixedTrial(fixed(model__regularization="none")), cfg.search)
    assert params == fixed(model__regularization="none")  # no init_std: optimizer is not sgd
    model, data, _ = split_params(cfg, params)
    assert data == {"batch_size": 48, "train_size": 300} and model["momentum"] == 0.7
    with_sgd = fixed(model__optimizer="sgd", model__regularization="none", model__init_std=0.05)
    assert suggest(FixedTrial(with_sgd), cfg.search)["model.init_std"] == 0.05  # when: [list]


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_every_sampler_respects_bounds_steps_logs_and_conditions(sampler: str) -> None:
    cfg = config(REGULARIZED, sampler={"name": sampler, "seed": 0})
    study = optuna.create_study(sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    seen: list[dict[str, Any]] = []
    study.optimize(lambda t: _score(seen, suggest(t, cfg.search)), n_trials=12)
    for params in seen:
        assert 1e-4 <= params["model.lr"] <= 1e-1
        assert params["data.batch_size"] % 16 == 0 and 16 <= params["data.batch_size"] <= 128
        assert isinstance(params["data.train_size"], int)
        assert 100 <= params["data.train_size"] <= 1000
        assert math.isclose(params["model.momentum"] * 10, round(params["model.momentum"] * 10))
        kind = params["model.regularization"]
        penalties = {k for k in ("model.l1", "model.l2", "model.weight_decay") if k in params}
        assert penalties == (set() if kind == "none" else {f"model.{kind}"})
        assert ("model.init_std" in params) == (params["model.optimizer"] == "sgd")
    assert len({p["model.regularization"] for p in seen}) > 1


def test_grid_sampler_visits_every_combination_once() -> None:
    grid = {"model.optimizer": {"choice": ["sgd", "adam"]}, "model.dropout": {"choice": [0, 0.5]}}
    cfg = config(grid, sampler={"name": "grid", "seed": 0})
    study = optuna.create_study(sampler=make_sampler(cfg))
    seen: list[dict[str, Any]] = []
    study.optimize(lambda t: _score(seen, suggest(t, cfg.search)), n_trials=10)
    assert sorted((p["model.optimizer"], p["model.dropout"]) for p in seen) == [
        ("adam", 0),
        ("adam", 0.5),
        ("sgd", 0),
        ("sgd", 0.5),
    ]


@pytest.mark.parametrize(
    "name, cls",
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_pruners_by_name(name: str, cls: type) -> None:
    cfg = load_config(DEFAULT_CONFIG, overrides=[f"pruner.name={name}", "population.size=1"])
    assert isinstance(make_pruner(cfg), cls)
    batched = load_config(DEFAULT_CONFIG, overrides=[f"pruner.name={name}"])  # population: 8
    assert isinstance(make_pruner(batched), PeerPruner)


def _score(seen: list[dict[str, Any]], params: dict[str, Any]) -> float:
    seen.append(params)
    return float(params["model.lr"]) if "model.lr" in params else 0.0
