"""Cross-checks of a parsed config against the registries: names, keys and dry builds."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from regzoo._checks import is_number
from regzoo.datamodules import (
    AUGMENT_KEYS,
    ArrayDataModule,
    build_datamodule,
    check_augment,
    data_facts,
    datamodule_class,
    datamodule_options,
    set_by_study,
    takes_augment,
)
from regzoo.studies.config.schema import ConfigError, Param, StudyConfig, TrainerSection
from regzoo.studies.config.search import REGULARIZATION, REGULARIZATIONS, split_params
from regzoo.zoo import build_model, is_foreign_model, model_hparams

# Trainer precisions a population batches (population.size > 1): no mixed precision.
BATCHED_PRECISIONS = ("32-true", "64-true")
# A model takes these from its datamodule (trial.train.data_facts), never from the config.
MODEL_SET_BY_DATA = {"input_shape", "num_classes", "normalize", "class_names", "input_range"}


def check_references(cfg: StudyConfig, *, source: str) -> None:
    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    # A name, an entry point or an import path; one that does not import, or names a class of
    # the wrong kind, is refused here, before anything runs.
    try:
        model_keys = set(model_hparams(cfg.model.name)) - MODEL_SET_BY_DATA
        if not is_foreign_model(cfg.model.name):  # the search's selector of l1/l2/decay
            model_keys.add(REGULARIZATION)
    except ValueError as exc:
        raise fail(f"model.name: {exc}") from None
    try:
        # Trial n's datamodule takes `seed + n`, the study's `seed` its split (trial.train).
        data_cls = datamodule_class(cfg.data.name)
        data_keys = set(datamodule_options(cfg.data.name)) - set_by_study(data_cls)
        if takes_augment(data_cls):  # regzoo augments a user's batches on their device
            data_keys.add("augment")
    except ValueError as exc:
        raise fail(f"data.name: {exc}") from None
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
    _check_regularization(cfg, fail)
    check_population(cfg, source=source)
    _dry_build(cfg, fail)


def check_population(cfg: StudyConfig, *, source: str) -> None:
    """Refuse, in one line naming the key, a config that cannot be batched as configured."""
    if cfg.population.size <= 1:
        return
    where = f"{source}: population.size={cfg.population.size}"
    precision = cfg.trainer.precision
    if precision not in BATCHED_PRECISIONS:
        raise ConfigError(
            f"{where} needs trainer.precision {' or '.join(BATCHED_PRECISIONS)}, got "
            f"{precision!r} (mixed precision is not batched); or set population.size: 1"
        )
    backend = cfg.data.options.get("augment_backend", "device")
    augmented = cfg.data.options.get("augment") or any(
        k.startswith("data.augment.") for k in cfg.search
    )
    if backend != "device" and augmented:
        raise ConfigError(
            f"{where} augments each member on its device: data.augment_backend must be "
            f"'device', got {backend!r}; or set population.size: 1"
        )
    if "data.augment_backend" in cfg.search:
        raise ConfigError(
            f"{where}: search.data.augment_backend cannot vary within a population; fix it to "
            "'device', or set population.size: 1"
        )


def _check_regularization(cfg: StudyConfig, fail: Any) -> None:
    """`regularization` names known types, and every type it can pick has a strength."""
    key = f"model.{REGULARIZATION}"
    param = cfg.search.get(key)
    if param is not None:
        where, types = f"search.{key}", param.choice
        if types is None:
            raise fail(f"{where}: the regularization type is a choice: [...] of {_allowed()}")
    elif REGULARIZATION in cfg.model.options:
        where, types = key, [cfg.model.options[REGULARIZATION]]
    else:
        return
    for kind in types:
        if kind not in REGULARIZATIONS:
            raise fail(f"{where}: unknown regularization {kind!r}; allowed: {_allowed()}")
        strength = cfg.model.options.get(kind)
        searched = f"model.{kind}" in cfg.search
        fixed = strength is not None and is_number(strength) and strength > 0
        if kind != "none" and not searched and not fixed:
            raise fail(
                f"{where}: {kind!r} has no strength; add search.model.{kind} "
                f"(when: {{{key}: {kind}}}) or a fixed model.{kind} > 0"
            )


def _allowed() -> str:
    return ", ".join(REGULARIZATIONS)


def candidate_values(param: Param) -> list[Any]:
    """The values a dry build tries for one dimension: both bounds, or every choice."""
    if param.choice is not None:
        return list(param.choice)
    bounds = param.float_ if param.float_ is not None else param.int_
    assert bounds is not None
    return list(bounds)


def _dry_build(cfg: StudyConfig, fail: Any) -> None:
    """Build the datamodule and the model (no data loaded) with each candidate search value.

    A failure names the search value being tried (`search.<key>=<value>`), or the section
    (`model:`, `data:`) when the fixed values fail with every dimension at its first value.
    """
    for varied, params in _dry_params(cfg.search):
        model_kw, data_kw, trainer_kw = split_params(cfg, params)
        where = f"search.{varied}={params[varied]!r}: " if varied else ""
        if varied and varied.startswith("trainer."):  # the fixed ones passed the schema
            try:
                TrainerSection.model_validate(trainer_kw)
            except ValidationError as exc:
                raise fail(f"{where}{exc.errors()[0]['msg']}") from None
        try:
            dm = build_datamodule(cfg.data.name, study_seed=cfg.seed, run_seed=cfg.seed, **data_kw)
            facts = _nominal_facts(dm, cfg.data.name, data_kw.get("augment"))
        except (ValueError, TypeError) as exc:
            raise fail(f"{where or 'data: '}{exc}{_with(params)}") from None
        if facts is None:
            continue
        accepted = model_hparams(cfg.model.name)
        try:
            build_model(
                cfg.model.name, **{k: v for k, v in facts.items() if k in accepted}, **model_kw
            )
        except (ValueError, TypeError) as exc:
            raise fail(f"{where or 'model: '}{exc}{_with(params)}") from None


def _nominal_facts(dm: Any, name: str, augment: Any) -> dict[str, Any] | None:
    """What a model takes from `dm`, as far as it is known before training: regzoo's own
    datamodules say it without loading data (None: not until loaded); a user's says
    `num_classes` and its `input_shape` or its first batch (`datamodules.data_facts`), which
    its `augment` options (regzoo's, on its batches) must fit."""
    if not isinstance(dm, ArrayDataModule):
        facts = data_facts(dm, name=name)
        check_augment(augment, facts["input_shape"], name=name)
        return facts
    shape = dm.nominal_input_shape()
    if shape is None:
        return None
    return {"input_shape": shape, "num_classes": dm.nominal_classes, "normalize": dm.normalize}


def _dry_params(search: dict[str, Param]) -> list[tuple[str | None, dict[str, Any]]]:
    """(varied key, parameters) that reach every candidate value once, `when:` satisfied.

    The first set is the fixed values alone, as `studies train` builds them; the second varies
    nothing and leaves conditional dimensions out, as a trial whose conditions fail does, so the
    config's fixed values they would replace are built too.
    """
    first = {key: candidate_values(p)[0] for key, p in search.items()}
    base = {key: value for key, value in first.items() if not search[key].when}
    sets: list[tuple[str | None, dict[str, Any]]] = [(None, {}), (None, base)]
    seen = [{}, base]
    for key, p in search.items():
        conditions = {k: v[0] if isinstance(v, list) else v for k, v in (p.when or {}).items()}
        for value in candidate_values(p):
            params = {**first, **conditions, key: value}
            if params not in seen:
                seen.append(params)
                sets.append((key, params))
    return sets


def _with(params: dict[str, Any]) -> str:
    return f" (with search values {params})" if params else ""
