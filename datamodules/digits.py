"""scikit-learn's 8×8 handwritten digits (1797 images, 10 classes); needs no network."""

from __future__ import annotations

from sklearn.datasets import load_digits

from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays


@register_datamodule("digits")
class Digits(ArrayDataModule):
    """Digits as (1, 8, 8) images scaled to [0, 1]; a fixed stratified 20% test split."""

    nominal_shape = (1, 8, 8)
    raw_range = (0.0, 1.0)
    nominal_classes = 10

    def load(self) -> Arrays:
        bunch = load_digits()
        x = bunch.images.reshape(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
        return Arrays(x=x, y=bunch.target)
