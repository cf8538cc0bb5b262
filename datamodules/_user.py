"""A user's `LightningDataModule` in a study: how regzoo builds it and what it reads from it.

regzoo's own datamodules (`ArrayDataModule`) say everything without loading data. A user's
datamodule says what it can: `num_classes` (an attribute, required), `input_shape` (an
attribute, or the shape of its first training batch), `class_names` and `feature_names`
(optional). Its constructor's `seed` and `split_seed` are the study's to set (`seeds`), so
that every run, confirmation runs included, sees one split. regzoo's `device` augmentations
(`augment`) apply to its training batches on their device (`augment_batches`), unless its
constructor takes an `augment` of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from regzoo._checks import is_int
from regzoo._registry import class_options
from regzoo.datamodules._augment import AugmentSpec, check_fits_data, parse_augment
from regzoo.datamodules._device_augment import DeviceAugmenter
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


def takes_augment(cls: type) -> bool:
    """Whether a study's `augment` option is regzoo's to apply (a user's datamodule that does not
    take `augment` itself), rather than a constructor argument."""
    return not issubclass(cls, ArrayDataModule) and "augment" not in class_options(cls)


def augment_batches(dm: L.LightningDataModule, augment: Any, *, name: str) -> None:
    """Augment `dm`'s training batches `(inputs, ...)` on their device, after its own
    `on_after_batch_transfer`, as regzoo's datamodules do theirs. The augmenter is fitted on the
    first batch (its shape, and its bounding box for the zoom and shift of points)."""
    spec = parse_augment(augment)
    if not spec.active:
        return
    own: Callable[[Any, int], Any] = dm.on_after_batch_transfer
    fitted: list[DeviceAugmenter] = []

    def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
        batch = own(batch, dataloader_idx)
        if dm.trainer is None or not dm.trainer.training:
            return batch
        x, *rest = batch
        if not fitted:
            fitted.append(device_augmenter(spec, x, name=name))
        return (fitted[0](x), *rest)

    # Lightning calls the hook it finds on the instance: the user's class is left unchanged.
    dm.on_after_batch_transfer = on_after_batch_transfer  # type: ignore[method-assign]


def check_augment(augment: Any, shape: tuple[int, ...], *, name: str) -> None:
    """Refuse `augment` options that are invalid, or do not fit inputs of `shape`."""
    check_fits_data(parse_augment(augment), shape, name)


def member_augmenter(dm: L.LightningDataModule, augment: Any, *, name: str) -> Any:
    """The `device` augmenter of one population member's `augment` options over `dm`'s first
    training batch (None when they augment nothing)."""
    spec = parse_augment(augment)
    return device_augmenter(spec, _first_batch(dm, name), name=name) if spec.active else None


def device_augmenter(spec: AugmentSpec, x: torch.Tensor, *, name: str) -> DeviceAugmenter:
    """A `device` augmenter for inputs like `x` `(B, *shape)`: zoom and shift of points are
    relative to their bounding box."""
    shape = tuple(int(d) for d in x.shape[1:])
    check_fits_data(spec, shape, name)
    low, high = x.min(dim=0).values, x.max(dim=0).values
    return DeviceAugmenter(spec, shape, centre=(low + high) / 2, extent=high - low)


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
            "feature_names": getattr(dm, "feature_names", None),  # a table's columns
            "input_range": dm.raw_range,
        }
    classes = getattr(dm, "num_classes", None)
    if not is_int(classes, low=2):
        raise ValueError(
            f"dataset {name!r} has num_classes={classes!r}; a LightningDataModule for regzoo "
            "sets num_classes (an integer >= 2) in its constructor"
        )
    names = getattr(dm, "class_names", None)
    features = getattr(dm, "feature_names", None)
    return {
        "input_shape": tuple(getattr(dm, "input_shape", None) or _first_batch_shape(dm, name)),
        "num_classes": classes,
        "normalize": "none",
        "class_names": tuple(names) if names else None,
        "feature_names": tuple(features) if features else None,
        "input_range": None,
    }


def train_eval_batches(dm: L.LightningDataModule) -> Any:
    """The training split as validation sees it, for `train_eval/*`: a regzoo datamodule's
    `train_eval_dataloader` (unshuffled, unaugmented); a user's datamodule's own
    `train_dataloader` (regzoo's device augmentations, applied after the transfer, are not; an
    augmentation of its own dataset is, which docs/byo.md notes)."""
    own = getattr(dm, "train_eval_dataloader", None)
    return own() if callable(own) else dm.train_dataloader()


def batch_size_of(dm: L.LightningDataModule) -> int | None:
    """The datamodule's training batch size, where it says one (`batch_size`)."""
    size = getattr(dm, "batch_size", None)
    return size if is_int(size, low=1) else None


def _first_batch_shape(dm: L.LightningDataModule, name: str) -> tuple[int, ...]:
    """The shape of one input of the first training batch `(x, y)`."""
    return tuple(int(d) for d in _first_batch(dm, name).shape[1:])


def _first_batch(dm: L.LightningDataModule, name: str) -> torch.Tensor:
    """The inputs of the first training batch `(x, y)`."""
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x = batch[0] if isinstance(batch, list | tuple) else None
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(
            f"dataset {name!r}: its training batches must be (inputs, labels) with inputs "
            "(B, ...); or give it an input_shape attribute"
        )
    return x
