"""The model registry: one name per model, one vocabulary of constructor arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from regzoo._checks import one_line
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


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild any zoo model from a Lightning checkpoint, the class read from the checkpoint.

    The file is read with `weights_only=True`: a checkpoint cannot run code when it is loaded.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ValueError(
            f"{where} cannot be read (truncated, damaged, or holding more than weights): "
            f"{one_line(exc, lines=2)}"
        ) from exc
    if not (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("state_dict"), Mapping)
        and isinstance(ckpt.get("hyper_parameters"), Mapping)
    ):
        raise ValueError(f"{where} is not a regzoo model checkpoint")
    name = ckpt.get("regzoo_model")
    if not isinstance(name, str):
        raise ValueError(f"{where} does not say which zoo model it holds")
    try:  # a damaged or edited checkpoint: hparams or weights that do not fit together
        model = create_model(name, **ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{where} does not rebuild its model: {one_line(exc, lines=2)}") from exc
    model.eval()
    return model
