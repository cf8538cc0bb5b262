"""The contract every registered datamodule keeps: shapes, splits, normalization, augmentation
only where it belongs. Parametrized over `list_datamodules()`, so a new dataset is covered."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo._normalize import normalized_shape
from regzoo.datamodules import ArrayDataModule, list_datamodules
from regzoo.datamodules._augment import data_kind
from regzoo.zoo._pipeline import InputPipeline

Make = Callable[..., ArrayDataModule]
ALL = list_datamodules()


def augment_for(dm: ArrayDataModule) -> dict[str, Any]:
    """A noticeable augmentation that fits the datamodule's kind of data."""
    assert dm.nominal_shape is not None
    if data_kind(dm.nominal_shape) == "image":
        return {"rotation": 20, "shift": 0.1, "zoom": 0.1, "noise": 0.05, "flip": "horizontal"}
    return {"shift": 0.1, "zoom": 0.1, "noise": 0.1}


def test_registry_has_every_dataset_of_the_design() -> None:
    expected = {"digits", "mnist1d", "moons", "circles", "xor", "spirals", "glyph", "mnist"}
    expected |= {"fashion_mnist", "cifar10", "image_folder", "csv"}
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_dtypes(make_dm: Make, name: str) -> None:
    dm = make_dm(name, batch_size=4)
    assert dm.input_shape == dm.nominal_input_shape()
    assert dm.num_classes == dm.nominal_classes
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (4, *dm.input_shape) and y.shape == (4,)
        assert int(y.min()) >= 0 and int(y.max()) < dm.num_classes
    pca = make_dm(name, normalize="pca")  # served raw: the model's pipeline flattens
    assert pca.input_shape == dm.input_shape == pca.nominal_input_shape()
    assert normalized_shape(pca.input_shape, "pca") == (math.prod(dm.input_shape),)


@pytest.mark.parametrize("name", ALL)
def test_splits_are_disjoint_reproducible_and_seeded(make_dm: Make, name: str) -> None:
    a, b, c = make_dm(name, seed=3), make_dm(name, seed=3), make_dm(name, seed=4)
    a.setup(), b.setup(), c.setup()
    parts = [set(a.split_indices[s].tolist()) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    for split in ("train", "val", "test"):
        assert np.array_equal(a.split_indices[split], b.split_indices[split])
        assert torch.equal(a.splits[split][0], b.splits[split][0])
    assert np.array_equal(a.split_indices["test"], c.split_indices["test"])  # never moves
    assert not np.array_equal(a.split_indices["val"], c.split_indices["val"])
    small = make_dm(name, seed=3, train_size=20)
    small.setup()
    assert len(small.split_indices["train"]) == 20
    assert set(small.split_indices["train"].tolist()) <= parts[0]
    assert np.array_equal(small.split_indices["test"], a.split_indices["test"])


@pytest.mark.parametrize("name", ALL)
def test_normalization_is_fitted_on_the_training_split_only(make_dm: Make, name: str) -> None:
    """The datamodule serves raw inputs and offers statistics of its training split; a model's
    pipeline loaded with them maps that split to zero mean (standard) or onto [0, 1] (minmax)."""
    dm = make_dm(name, normalize="standard", train_size=40)
    raw_train = dm.raw("train").numpy()
    assert torch.equal(dm.splits["train"][0], dm.raw("train"))  # served raw
    axes = (0,) if raw_train.ndim == 2 else (0, *range(2, raw_train.ndim))
    kind, stats = dm.input_statistics()
    assert kind == "standard"
    np.testing.assert_allclose(
        stats["shift"], raw_train.mean(axis=axes, keepdims=True)[0], atol=1e-5
    )
    pipeline = InputPipeline("standard", dm.input_shape).load_statistics(stats)
    x_train = pipeline(dm.raw("train")).numpy()
    np.testing.assert_allclose(x_train.mean(axis=axes), 0, atol=1e-4)
    everything = np.concatenate([dm.raw(s).numpy() for s in ("train", "val", "test")])
    whole = everything.mean(axis=axes, keepdims=True)[0]
    assert not np.allclose(stats["shift"], whole, atol=1e-6)
    minmax_dm = make_dm(name, normalize="minmax", train_size=40)
    minmax = InputPipeline("minmax", dm.input_shape).load_statistics(
        minmax_dm.input_statistics()[1]
    )(minmax_dm.raw("train"))
    assert float(minmax.min()) == pytest.approx(0, abs=1e-6)
    assert float(minmax.max()) == pytest.approx(1, abs=1e-6)


class Recorder(L.LightningModule):
    """A real (linear) classifier that keeps every batch the Trainer hands it."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(math.prod(input_shape), num_classes)
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}

    def _step(self, split: str, batch: Any) -> torch.Tensor:
        x, y = batch
        self.seen[split].append(x.detach().clone())
        return F.cross_entropy(self.net(x.flatten(1)), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step("test", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("backend", ["device", "albumentations"])
@pytest.mark.parametrize("name", ALL)
def test_augmentation_changes_training_batches_only(
    make_dm: Make, name: str, backend: str, tiny_trainer_kwargs: dict[str, Any]
) -> None:
    plain = make_dm(name, batch_size=8, normalize="standard")
    dm = make_dm(
        name,
        batch_size=8,
        normalize="standard",
        augment=augment_for(plain),
        augment_backend=backend,
    )
    model = Recorder(dm.input_shape, dm.num_classes)
    trainer = L.Trainer(**tiny_trainer_kwargs, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    unaugmented = iter(plain.train_dataloader())  # same seed: the same samples in each batch
    for seen in model.seen["train"]:
        expected, _ = next(unaugmented)
        assert seen.shape == expected.shape
        assert not torch.allclose(seen, expected, atol=1e-3)
    for split, loader in (("val", plain.val_dataloader()), ("test", plain.test_dataloader())):
        assert model.seen[split]
        for seen, (expected, _) in zip(model.seen[split], loader, strict=False):
            assert torch.equal(seen, expected)
