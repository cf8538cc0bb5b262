"""Cross-checks of a parsed config against the registries: names, keys and dry builds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datamodules import create_datamodule, datamodule_options, list_datamodules
from zoo import create_model, list_models, model_hparams

if TYPE_CHECKING:
    from studies.config import Param, StudyConfig

DATA_SET_BY_STUDY = {"seed"}  # the study seeds each trial's split from its own `seed`
MODEL_SET_BY_DATA = {"input_shape", "num_classes"}


def check_references(cfg: StudyConfig, *, source: str) -> None:
    from studies.config import AUGMENT_KEYS, ConfigError, TrainerSection

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if cfg.model.name not in list_models():
        raise fail(
            f"model.name: unknown model {cfg.model.name!r}; available: {', '.join(list_models())}"
        )
    if cfg.data.name not in list_datamodules():
        raise fail(
            f"data.name: unknown dataset {cfg.data.name!r}; available: "
            f"{', '.join(list_datamodules())}"
        )
    model_keys = set(model_hparams(cfg.model.name)) - MODEL_SET_BY_DATA
    data_keys = set(datamodule_options(cfg.data.name)) - DATA_SET_BY_STUDY
    trainer_keys = set(TrainerSection.model_fields)
    for key in cfg.model.options:
        if key not in model_keys:
            raise fail(
                f"model.{key}: unknown hyperparameter of {cfg.model.name!r}; "
                f"allowed: {', '.join(sorted(model_keys))}"
            )
    for key in cfg.data.options:
        if key not in data_keys:
            raise fail(
                f"data.{key}: unknown option of {cfg.data.name!r}; "
                f"allowed: {', '.join(sorted(data_keys))}"
            )
    augment = cfg.data.options.get("augment") or {}
    if not isinstance(augment, dict):
        raise fail(f"data.augment: expected a mapping of {', '.join(AUGMENT_KEYS)}")
    for key in augment:
        if key not in AUGMENT_KEYS:
            raise fail(
                f"data.augment.{key}: unknown augmentation; allowed: {', '.join(AUGMENT_KEYS)}"
            )

    seen: list[str] = []
    for key, param in cfg.search.items():
        section, _, rest = key.partition(".")
        allowed = {"model": model_keys, "data": data_keys, "trainer": trainer_keys}.get(section)
        sub, _, leaf = rest.partition(".")
        if allowed is None or not rest:
            raise fail(
                f"search.{key}: a search key is model.<hparam>, data.<option>, "
                "data.augment.<name> or trainer.<option>"
            )
        if section == "data" and sub == "augment" and leaf:
            if leaf not in AUGMENT_KEYS:
                raise fail(
                    f"search.{key}: unknown augmentation {leaf!r}; allowed: "
                    f"{', '.join(AUGMENT_KEYS)}"
                )
        elif rest not in allowed:
            raise fail(
                f"search.{key}: {rest!r} is not a {section} "
                f"{'hyperparameter' if section == 'model' else 'option'}; allowed: "
                f"{', '.join(sorted(allowed))}"
            )
        for cond in param.when or {}:
            if cond not in seen:
                raise fail(
                    f"search.{key}.when: {cond!r} must be a search key listed before {key!r}"
                )
        seen.append(key)
    if cfg.sampler.name == "grid":
        for key, param in cfg.search.items():
            if param.choice is None or param.when:
                raise fail(
                    f"search.{key}: the grid sampler needs choice: [...] values (and no when:)"
                )
    if cfg.sampler.name == "cmaes" and any(p.choice is not None for p in cfg.search.values()):
        pass  # Optuna's CMA-ES samples categoricals independently (with a warning); allowed.
    _dry_build(cfg, fail)


def candidate_values(param: Param) -> list[Any]:
    """The values a dry build tries for one dimension: both bounds, or every choice."""
    if param.choice is not None:
        return list(param.choice)
    bounds = param.float_ if param.float_ is not None else param.int_
    assert bounds is not None
    return list(bounds)


def _dry_build(cfg: StudyConfig, fail: Any) -> None:
    """Build the datamodule and the model (no data loaded) with each candidate search value."""
    from studies.search import split_params

    first = {key: candidate_values(p)[0] for key, p in cfg.search.items()}
    trials = [first] + [
        {**first, key: value} for key, p in cfg.search.items() for value in candidate_values(p)[1:]
    ]
    for params in trials:
        model_kw, data_kw, _ = split_params(cfg, params)
        try:
            dm = create_datamodule(cfg.data.name, seed=cfg.seed, **data_kw)
        except (ValueError, TypeError) as exc:
            raise fail(f"data: {exc}{_with(params)}") from None
        shape = dm.nominal_input_shape()
        if shape is None:
            continue
        try:
            create_model(
                cfg.model.name, input_shape=shape, num_classes=dm.nominal_classes, **model_kw
            )
        except (ValueError, TypeError) as exc:
            raise fail(f"model: {exc}{_with(params)}") from None


def _with(params: dict[str, Any]) -> str:
    return f" (with search values {params})" if params else ""
