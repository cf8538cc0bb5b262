"""The model registry: one name per model, one vocabulary of constructor arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from regzoo._registry import Registry
from regzoo.zoo._hparams import plain_hparam
from regzoo.zoo.classifier import Classifier

MODELS: Registry[Classifier] = Registry(
    "model", option_noun="hyperparameter", name_attribute="model_name"
)
C = TypeVar("C", bound=type[Classifier])


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator that adds a `Classifier` subclass to the registry under `name`."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return MODELS.names()


def model_class(name: str) -> type[Classifier]:
    """The class registered as `name`; a clear error lists the names when it is unknown."""
    return MODELS.get(name)


def model_hparams(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_model(name, ...)` accepts, with its default, base class included."""
    return MODELS.options(name)


def create_model(name: str, **hparams: Any) -> Classifier:
    """Build a registered model: `create_model("cnn", input_shape=(1, 8, 8), num_classes=10)`.

    Unknown hyperparameters are refused with the list of accepted ones.
    """
    MODELS.check_options(name, hparams)
    return MODELS.get(name)(**{k: plain_hparam(k, v) for k, v in hparams.items()})
