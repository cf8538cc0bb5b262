"""The datamodule registry: `create_datamodule(name, **options)` by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from regzoo._registry import Registry
from regzoo.datamodules.base import ArrayDataModule

DATAMODULES: Registry[ArrayDataModule] = Registry(
    "dataset", option_noun="option", name_attribute="dataset_name"
)
D = TypeVar("D", bound=type[ArrayDataModule])


def register_datamodule(name: str) -> Callable[[D], D]:
    """Class decorator that adds a datamodule to the registry under `name`."""
    return DATAMODULES.register(name)


def list_datamodules() -> list[str]:
    """Names accepted by `create_datamodule`, sorted."""
    return DATAMODULES.names()


def datamodule_class(name: str) -> type[ArrayDataModule]:
    """The class registered as `name`; a clear error lists the names when it is unknown."""
    return DATAMODULES.get(name)


def datamodule_options(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_datamodule(name, ...)` accepts, base class included."""
    return DATAMODULES.options(name)


def create_datamodule(name: str, **options: Any) -> ArrayDataModule:
    """Build a registered datamodule; unknown options are refused with the accepted list."""
    return DATAMODULES.create(name, **options)
