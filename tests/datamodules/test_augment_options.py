"""Bad augmentation options are refused at construction, with one message naming the option,
the value and what is allowed; augmentation acts on raw inputs, before normalization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from regzoo.datamodules import ArrayDataModule, Arrays, create_datamodule

Make = Callable[..., ArrayDataModule]


@pytest.mark.parametrize(
    ("augment", "match"),
    [
        ({"rotate": 10}, r"unknown key\(s\) rotate; allowed: rotation, flip"),
        ({"rotation": -5}, r"augment.rotation=-5 is invalid; allowed: degrees in \[0, 180\]"),
        ({"rotation": "ten"}, r"augment.rotation='ten' is invalid"),
        ({"zoom": 1.0}, r"augment.zoom=1.0 is invalid; allowed: a fraction in \[0, 1\)"),
        ({"shift": 1.5}, r"augment.shift=1.5 is invalid"),
        ({"noise": float("nan")}, r"augment.noise=nan is invalid"),
        ({"p": 2}, r"augment.p=2 is invalid; allowed: a probability in \[0, 1\]"),
        ({"p": True}, r"augment.p=True is invalid"),
        ({"flip": "diagonal"}, r"augment.flip='diagonal' is invalid; allowed: none, horizontal"),
        ({"noise": 1.5}, r"augment.noise=1.5 is invalid for images in \[0, 1\]"),
        ([10], r"augment=\[10\] is invalid; allowed: a mapping"),
    ],
)
def test_bad_options_are_refused_by_name(augment: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_datamodule("digits", augment=augment)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"augment_backend='gpu' is invalid; allowed: device"):
        create_datamodule("digits", augment_backend="gpu")


@pytest.mark.parametrize(
    ("name", "augment", "match"),
    [
        ("mnist1d", {"rotation": 10}, r"rotation=10 makes no sense for 1-D signals"),
        ("mnist1d", {"flip": "horizontal"}, r"flip='horizontal' makes no sense for 1-D signals"),
        ("moons", {"rotation": 5}, r"rotation=5 makes no sense for point sets"),
        ("glyph", {"flip": "both"}, r"flip='both' makes no sense for point sets"),
    ],
)
def test_rotation_and_flip_of_signals_and_points_are_refused(
    name: str, augment: dict[str, Any], match: str
) -> None:
    # Refused before any data is loaded, so a study config fails its dry check.
    with pytest.raises(ValueError, match=match):
        create_datamodule(name, augment=augment)


class Unknown(ArrayDataModule):
    """No nominal shape: the check happens once the data is loaded."""

    def load(self) -> Arrays:
        return Arrays(x=np.zeros((50, 1, 10)), y=np.arange(50) % 2)


def test_shape_unknown_until_loading_is_checked_at_setup() -> None:
    dm = Unknown(augment={"rotation": 10})
    with pytest.raises(ValueError, match="makes no sense for 1-D signals"):
        dm.setup()


def test_no_augmentation_serves_the_stored_tensors(make_dm: Make) -> None:
    dm = make_dm("digits", augment={"rotation": 0, "p": 1.0})
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.augment_raw(x) is x  # nothing configured: nothing runs


class Uniform(ArrayDataModule):
    """Pixels uniform in [0.3, 0.7]: noise of 0.05 is never clipped."""

    def load(self) -> Arrays:
        rng = np.random.default_rng(0)
        return Arrays(x=rng.uniform(0.3, 0.7, (200, 1, 8, 8)), y=np.arange(200) % 2)


@pytest.mark.parametrize("backend", ["device", "albumentations"])
def test_noise_is_in_raw_units_whatever_the_normalization(backend: str) -> None:
    options: dict[str, Any] = {"normalize": "standard", "batch_size": 200, "seed": 1}
    plain = Uniform(**options)
    dm = Uniform(**options, augment={"noise": 0.05}, augment_backend=backend)
    x, _ = next(iter(dm.train_dataloader()))
    if backend == "device":  # what on_after_batch_transfer does while training
        x = dm.augment_batch(x)
    expected, _ = next(iter(plain.train_dataloader()))
    # Batches are raw (the model normalizes), so noise is in the data's own units.
    assert float((x - expected).std()) == pytest.approx(0.05, rel=0.05)


def test_augmentation_acts_on_raw_inputs_under_pca(make_dm: Make) -> None:
    """Under `pca` the batches are still raw images (the model flattens and whitens them), so
    image augmentations apply; a raw batch stays in its shape and changes."""
    dm = make_dm("digits", normalize="pca", augment={"noise": 0.05, "rotation": 10})
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 8, 8)
    augmented = dm.augment_batch(x)
    assert augmented.shape == x.shape and not torch.allclose(augmented, x, atol=1e-3)
