"""Search spaces are data: every `suggest_*` call of a study lives in `suggest`.

params = suggest(optuna.trial.FixedTrial({"model.lr": 0.01}), cfg.search)

The regularization type is searchable like any hparam: `model.regularization` picks one of
`none | l1 | l2 | weight_decay`, and each type's strength is its own dimension, conditioned on
that choice with `when:`. The chosen penalty is kept; the other two are set to 0.

    model.regularization: {choice: [none, l1, l2, weight_decay]}
    model.l1: {float: [1.0e-6, 1.0e-3], log: true, when: {model.regularization: l1}}
    model.l2: {float: [1.0e-5, 1.0e-1], log: true, when: {model.regularization: l2}}
    model.weight_decay:
      {float: [1.0e-5, 1.0e-1], log: true, when: {model.regularization: weight_decay}}
"""

from __future__ import annotations

import copy
from typing import Any

import optuna

from regzoo.studies.config.schema import Param, StudyConfig

# Not a zoo hparam: a selector that `split_params` turns into the three penalty strengths.
REGULARIZATION = "regularization"
PENALTIES = ("l1", "l2", "weight_decay")
REGULARIZATIONS = ("none", *PENALTIES)


def suggest(trial: optuna.trial.BaseTrial, search: dict[str, Param]) -> dict[str, Any]:
    """Sample each dimension in config order; a `when:` dimension only if its condition holds."""
    params: dict[str, Any] = {}
    for key, p in search.items():
        if p.when and not all(_matches(params.get(k), v) for k, v in p.when.items()):
            continue
        if p.float_ is not None:
            params[key] = trial.suggest_float(key, *p.float_, log=p.log, step=p.step)
        elif p.int_ is not None:
            step = int(p.step) if p.step else 1
            params[key] = trial.suggest_int(key, *p.int_, log=p.log, step=step)
        else:
            assert p.choice is not None
            params[key] = trial.suggest_categorical(key, p.choice)
    return params


def _matches(value: Any, condition: Any) -> bool:
    return value in condition if isinstance(condition, list) else value == condition


def grid_space(search: dict[str, Param]) -> dict[str, list[Any]]:
    """The GridSampler's search space: every choice of every dimension."""
    return {key: list(p.choice or []) for key, p in search.items()}


def split_params(
    cfg: StudyConfig, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Merge sampled `params` over the config's fixed values: model, data and trainer kwargs."""
    model = dict(cfg.model.options)
    data = copy.deepcopy(cfg.data.options)
    trainer = cfg.trainer.model_dump()
    for key, value in params.items():
        section, _, rest = key.partition(".")
        if section == "model":
            model[rest] = value
        elif section == "trainer":
            trainer[rest] = value
        elif rest.startswith("augment."):
            data.setdefault("augment", {})
            data["augment"] = {**(data["augment"] or {}), rest.partition(".")[2]: value}
        else:
            data[rest] = value
    return _tuples(apply_regularization(model)), data, trainer


def apply_regularization(model: dict[str, Any]) -> dict[str, Any]:
    """Replace a `regularization` selector by the penalties: the chosen one kept, others 0."""
    if REGULARIZATION not in model:
        return model
    model = dict(model)
    chosen = model.pop(REGULARIZATION)
    for penalty in PENALTIES:
        if penalty != chosen:
            model[penalty] = 0.0
    return model


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
    # YAML gives lists; hparams such as channels and betas are tuples in the zoo.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
