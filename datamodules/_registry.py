"""The datamodule registry: `create_datamodule(name, **options)` by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from datamodules.base import ArrayDataModule

_DATAMODULES: dict[str, type[ArrayDataModule]] = {}
D = TypeVar("D", bound="type[ArrayDataModule]")


def register_datamodule(name: str) -> Callable[[D], D]:
    """Class decorator that adds a datamodule to the registry under `name`."""

    def add(cls: D) -> D:
        if name in _DATAMODULES:
            raise ValueError(f"datamodule name {name!r} is already registered")
        _DATAMODULES[name] = cls
        cls.dataset_name = name
        return cls

    return add


def list_datamodules() -> list[str]:
    """Names accepted by `create_datamodule`, sorted."""
    return sorted(_DATAMODULES)


def datamodule_class(name: str) -> type[ArrayDataModule]:
    if name not in _DATAMODULES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(list_datamodules())}")
    return _DATAMODULES[name]


def datamodule_options(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_datamodule(name, ...)` accepts, base class included."""
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(datamodule_class(name).__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params[p.name] = p
    return params


def create_datamodule(name: str, **options: Any) -> ArrayDataModule:
    """Build a registered datamodule; unknown options are refused with the accepted list."""
    accepted = datamodule_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return datamodule_class(name)(**options)
