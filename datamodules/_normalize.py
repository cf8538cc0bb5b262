"""Input normalization fitted on the training split: none, min-max, standardization, PCA."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

EPS = 1e-8


class Normalizer:
    """Identity; the base of the fitted normalizers. Statistics are per channel for images and
    signals `(N, C, ...)` and per feature for vectors `(N, D)`."""

    def fit(self, x: np.ndarray) -> Normalizer:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) if x.ndim == 2 else (0, *range(2, x.ndim))


class MinMax(Normalizer):
    """x' = (x − min) / (max − min), so the training data spans [0, 1]."""

    def fit(self, x: np.ndarray) -> MinMax:
        self.low = x.min(axis=_axes(x), keepdims=True)
        self.span = np.maximum(x.max(axis=_axes(x), keepdims=True) - self.low, EPS)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return super().transform((x - self.low) / self.span)


class Standard(Normalizer):
    """x' = (x − mean) / std, the training data's statistics."""

    def fit(self, x: np.ndarray) -> Standard:
        self.mean = x.mean(axis=_axes(x), keepdims=True)
        self.std = np.maximum(x.std(axis=_axes(x), keepdims=True), EPS)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return super().transform((x - self.mean) / self.std)


class Pca(Normalizer):
    """Whitened principal-component scores of the flattened input: shape (N, D)."""

    def fit(self, x: np.ndarray) -> Pca:
        flat = x.reshape(len(x), -1)
        self.pca = PCA(n_components=min(flat.shape), whiten=True).fit(flat)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return super().transform(self.pca.transform(x.reshape(len(x), -1)))


NORMALIZERS: dict[str, type[Normalizer]] = {
    "none": Normalizer,
    "minmax": MinMax,
    "standard": Standard,
    "pca": Pca,
}
