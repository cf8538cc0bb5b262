"""A user's `LightningDataModule` in a study: how regzoo builds it and what it reads from it.

regzoo's own datamodules (`ArrayDataModule`) say everything without loading data. A user's
datamodule says what it can: `num_classes` (an attribute, required), `input_shape` (an
attribute, or the shape of its first training batch), `class_names` (optional). Its
constructor's `seed` and `split_seed` are the study's to set (`seeds`), so that every run,
confirmation runs included, sees one split.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from regzoo._checks import is_int
from regzoo._registry import class_options
from regzoo.datamodules.base import ArrayDataModule

SEED_ARGS = ("seed", "split_seed")


def kind_refusal(obj: Any) -> str | None:
    """Why `obj` cannot be a datamodule (one line saying what can), or None when it can."""
    if isinstance(obj, type) and issubclass(obj, L.LightningDataModule):
        return None
    return "allowed: a LightningDataModule class"


def seeds(cls: type, *, study: int, run: int) -> dict[str, int]:
    """The seed arguments a study passes datamodule class `cls`.

    regzoo's take the run's `seed` (batch order, augmentation) and the study's `split_seed`.
    A user's with both gets the same; one with `seed` alone gets the study's, since its seed
    may choose the split (the run's seed still seeds the rest, through `seed_everything`).
    """
    if issubclass(cls, ArrayDataModule):
        return {"seed": run, "split_seed": study}
    declared = class_options(cls)
    if "split_seed" in declared:
        return {"split_seed": study, **({"seed": run} if "seed" in declared else {})}
    return {"seed": study} if "seed" in declared else {}


def set_by_study(cls: type) -> set[str]:
    """Constructor arguments the study sets and a config may not (`seeds`); regzoo's own keep
    `split_seed` as an option (default: the study's seed)."""
    if issubclass(cls, ArrayDataModule):
        return {"seed"}
    return set(SEED_ARGS) & set(class_options(cls))


def data_facts(dm: L.LightningDataModule, *, name: str | None = None) -> dict[str, Any]:
    """What a model takes from its datamodule: the raw inputs' shape and range, the classes and
    their names, and the normalization it will apply (its statistics come at `setup`).

    A user's datamodule (`name`, for messages: its config name, else its class) normalizes
    nothing the model would need to know of; its `input_shape` comes from its first training
    batch when it has no attribute.
    """
    name = name or type(dm).__qualname__
    if isinstance(dm, ArrayDataModule):
        return {
            "input_shape": dm.input_shape,
            "num_classes": dm.num_classes,
            "normalize": dm.normalize,
            "class_names": dm.class_names,
            "input_range": dm.raw_range,
        }
    classes = getattr(dm, "num_classes", None)
    if not is_int(classes, low=2):
        raise ValueError(
            f"dataset {name!r} has num_classes={classes!r}; a LightningDataModule for regzoo "
            "sets num_classes (an integer >= 2) in its constructor"
        )
    names = getattr(dm, "class_names", None)
    return {
        "input_shape": tuple(getattr(dm, "input_shape", None) or _first_batch_shape(dm, name)),
        "num_classes": classes,
        "normalize": "none",
        "class_names": tuple(names) if names else None,
        "input_range": None,
    }


def batch_size_of(dm: L.LightningDataModule) -> int | None:
    """The datamodule's training batch size, where it says one (`batch_size`)."""
    size = getattr(dm, "batch_size", None)
    return size if is_int(size, low=1) else None


def _first_batch_shape(dm: L.LightningDataModule, name: str) -> tuple[int, ...]:
    """The shape of one input of the first training batch `(x, y)`."""
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x = batch[0] if isinstance(batch, list | tuple) else None
    if x is None or not hasattr(x, "shape") or len(x.shape) < 2:
        raise ValueError(
            f"dataset {name!r}: its training batches must be (inputs, labels) with inputs "
            "(B, ...); or give it an input_shape attribute"
        )
    return tuple(int(d) for d in x.shape[1:])
