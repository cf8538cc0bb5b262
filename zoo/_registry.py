"""The model registry: one name per model, one vocabulary of constructor arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    from zoo.classifier import Classifier

_MODELS: dict[str, type[Classifier]] = {}
C = TypeVar("C", bound="type[Classifier]")


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator that adds a `Classifier` subclass to the registry under `name`."""

    def add(cls: C) -> C:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered by {_MODELS[name]!r}")
        _MODELS[name] = cls
        cls.model_name = name
        return cls

    return add


def plain_hparam(name: str, value: Any) -> Any:
    """`value` as plain Python (None, bool, int, float, str, tuples of them).

    A checkpoint loads with `weights_only=True` only if its hparams are plain: a numpy scalar
    (say `np.int64` from an array's shape) would make torch refuse the file.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / torch scalar
        return plain_hparam(name, value.item())
    if isinstance(value, list | tuple) or getattr(value, "ndim", None) == 1:
        return tuple(plain_hparam(name, v) for v in value)
    raise ValueError(
        f"{name}={value!r} is invalid; allowed: None, bool, int, float, str or a sequence of them"
    )


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type[Classifier]:
    """The class registered as `name`; a clear error lists the names when it is unknown."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def model_hparams(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_model(name, ...)` accepts, with its default, base class included."""
    cls = model_class(name)
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params[p.name] = p
    return params


def create_model(name: str, **hparams: Any) -> Classifier:
    """Build a registered model: `create_model("cnn", input_shape=(1, 8, 8), num_classes=10)`.

    Unknown hyperparameters are refused with the list of accepted ones.
    """
    accepted = model_hparams(name)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return model_class(name)(**{k: plain_hparam(k, v) for k, v in hparams.items()})


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
            f"{_brief(exc)}"
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
        raise ValueError(f"{where} does not rebuild its model: {_brief(exc)}") from exc
    model.eval()
    return model


def _brief(exc: BaseException) -> str:
    """An error on one line: its first two non-empty lines (torch's run to many), or its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
