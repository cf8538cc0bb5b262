"""scikit-learn's wine recognition data: 178 wines, 13 chemical measurements, 3 cultivars.

The features are on very different scales (proline about 280-1680, hue about 0.5-1.7,
nonflavanoid phenols about 0.1-0.7): the data set where input normalization shows. Needs no
network.
"""

from __future__ import annotations

from sklearn.datasets import load_wine

from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays


@register_datamodule("wine")
class Wine(ArrayDataModule):
    """Wine as raw (13,) feature vectors, unscaled; a fixed stratified 20% test split."""

    nominal_shape = (13,)
    nominal_classes = 3

    def load(self) -> Arrays:
        bunch = load_wine()
        return Arrays(x=bunch.data, y=bunch.target)
