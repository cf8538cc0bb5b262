"""The datamodule registry: `create_datamodule(name, **options)` by name.

A dataset name is a registered name (`register_datamodule`), an entry point of group
`regzoo.datamodules` that an installed package declares, or an import path
`package.module:Class` of any `LightningDataModule` (`datamodules._user`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import lightning as L

from regzoo._registry import Registry
from regzoo.datamodules._user import augment_batches, kind_refusal, seeds, takes_augment
from regzoo.datamodules.base import ArrayDataModule

DATAMODULES: Registry[L.LightningDataModule] = Registry(
    "dataset",
    option_noun="option",
    name_attribute="dataset_name",
    group="regzoo.datamodules",
    accepts=kind_refusal,
)
D = TypeVar("D", bound=type[L.LightningDataModule])


def register_datamodule(name: str) -> Callable[[D], D]:
    """Class decorator that adds a datamodule to the registry under `name`."""
    return DATAMODULES.register(name)


def list_datamodules() -> list[str]:
    """Registered names and installed entry points accepted by `create_datamodule`, sorted."""
    return DATAMODULES.names()


def datamodule_sources() -> dict[str, str]:
    """Each name of `list_datamodules()` and where it comes from."""
    return DATAMODULES.sources()


def datamodule_class(name: str) -> type[L.LightningDataModule]:
    """The class `name` stands for; a clear error when it is unknown, does not import or is not
    a LightningDataModule."""
    return DATAMODULES.get(name)


def datamodule_options(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_datamodule(name, ...)` accepts, base class included."""
    return DATAMODULES.options(name)


def create_datamodule(name: str, **options: Any) -> ArrayDataModule:
    """Build one of regzoo's datamodules (or a user's `ArrayDataModule` subclass); unknown
    options are refused with the accepted list. Another LightningDataModule: `build_datamodule`.
    """
    if not issubclass(datamodule_class(name), ArrayDataModule):
        raise ValueError(
            f"dataset {name!r} is a LightningDataModule of its own, not a regzoo "
            "ArrayDataModule: build it with build_datamodule"
        )
    dm = DATAMODULES.create(name, **options)
    assert isinstance(dm, ArrayDataModule)
    return dm


def build_datamodule(
    name: str, *, study_seed: int, run_seed: int, **options: Any
) -> L.LightningDataModule:
    """Any datamodule as a study builds it: its options, and the seeds the study gives it
    (`datamodules._user.seeds`: one split for every run of a study). A user's datamodule takes
    regzoo's `augment` option on its training batches (`datamodules._user.augment_batches`)."""
    cls = datamodule_class(name)
    augment = options.pop("augment", None) if takes_augment(cls) else None
    DATAMODULES.check_options(name, options)
    dm = cls(**{**seeds(cls, study=study_seed, run=run_seed), **options})
    augment_batches(dm, augment, name=name)
    return dm
