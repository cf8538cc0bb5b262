"""2-D point sets for seeing decision boundaries: `moons`, `circles`, `xor`, `spirals`.

Each is two classes of points `(2,)` in roughly [-1, 1]², generated with a fixed seed (the data,
and so the fixed test split, do not move with `seed`). `noise` is the standard deviation of
gaussian jitter added to the points, as in scikit-learn's `make_moons`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.datasets import make_circles, make_moons

from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays

DATA_SEED = 1234
MAX_POINTS = 10**7  # a point set that still fits in memory many times over


class PointSet(ArrayDataModule):
    """Base of the point sets: `n_samples` points with `noise` jitter, two classes.

    Args:
        n_samples: Points in the whole data set (test split included).
        noise: Standard deviation of the gaussian jitter on the points.
    """

    nominal_shape = (2,)
    nominal_classes = 2

    def __init__(self, *, n_samples: int = 1000, noise: float = 0.1, **options: Any) -> None:
        _check_points(n_samples, noise)
        self.n_samples, self.noise = n_samples, noise
        super().__init__(**options)

    def load(self) -> Arrays:
        rng = np.random.default_rng(DATA_SEED)
        x, y = self.generate(rng)
        x = x + rng.normal(0.0, self.noise, x.shape) if self.noise else x
        return Arrays(x=x.astype(np.float32), y=y.astype(np.int64))

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free points `(n_samples, 2)` and labels `(n_samples,)`."""
        raise NotImplementedError


def _check_points(n_samples: object, noise: object) -> None:
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 20:
        raise ValueError(f"n_samples={n_samples!r} is invalid; allowed: an integer >= 20")
    if n_samples > MAX_POINTS:
        raise ValueError(f"n_samples={n_samples!r} is invalid; allowed: at most {MAX_POINTS}")
    if not isinstance(noise, int | float) or isinstance(noise, bool) or not 0 <= noise < math.inf:
        raise ValueError(f"noise={noise!r} is invalid; allowed: a number >= 0")


@register_datamodule("moons")
class Moons(PointSet):
    """Two interleaving half circles (scikit-learn's `make_moons`), centred on the origin."""

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y = make_moons(self.n_samples, noise=0.0, random_state=DATA_SEED)
        return (x - [0.5, 0.25]) / 1.5, y


@register_datamodule("circles")
class Circles(PointSet):
    """A circle inside a circle of twice its radius (scikit-learn's `make_circles`)."""

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return make_circles(self.n_samples, noise=0.0, factor=0.5, random_state=DATA_SEED)


@register_datamodule("xor")
class Xor(PointSet):
    """Uniform points in [-1, 1]², class 1 where exactly one coordinate is positive."""

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-1.0, 1.0, (self.n_samples, 2))
        return x, ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)


@register_datamodule("spirals")
class Spirals(PointSet):
    """Two interleaved spirals of 1.5 turns each, one per class."""

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(self.n_samples) % 2
        t = np.sqrt(rng.uniform(0.0, 1.0, self.n_samples))  # more points on the outer turns
        angle = 3 * math.pi * t + math.pi * y
        x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        return x, y
