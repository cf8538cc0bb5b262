"""Input normalization fitted on the training split: none, min-max, standardization, PCA.

Each normalizer maps numpy arrays when the splits are built (`transform`) and torch tensors on
any device (`forward`, and its inverse `inverse`), so the `device` augmentation backend can take
a normalized training batch back to raw inputs, augment it and normalize it again.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-8
# Principal directions whose variance is below this share of the largest are noise; whitening
# them would blow rounding errors up to unit variance, so they are dropped (score 0).
PCA_RTOL = 1e-10


class Normalizer:
    """Identity; the base of the fitted normalizers. Statistics are per channel for images and
    signals `(N, C, ...)` and per feature for vectors `(N, D)`."""

    shape: tuple[int, ...] = ()

    def fit(self, x: np.ndarray) -> Normalizer:
        self.shape = tuple(x.shape[1:])
        self._tensor_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`transform` for a batch tensor, on its device."""
        return x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs `(B, *shape)` back from normalized ones (exact on the training data)."""
        return x

    def _tensors(self, like: torch.Tensor, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The fitted `arrays` as tensors on `like`'s device, converted once per device."""
        key = (like.device, like.dtype)
        if key not in self._tensor_cache:
            self._tensor_cache[key] = tuple(
                torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in arrays
            )
        return self._tensor_cache[key]


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) if x.ndim == 2 else (0, *range(2, x.ndim))


class _Affine(Normalizer):
    """x' = (x − shift) / scale with per-channel (or per-feature) `shift` and `scale`."""

    shift: np.ndarray
    scale: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return super().transform((x - self.shift) / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale = self._tensors(x, self.shift, self.scale)
        return (x - shift) / scale

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale = self._tensors(x, self.shift, self.scale)
        return x * scale + shift


class MinMax(_Affine):
    """x' = (x − min) / (max − min), so the training data spans [0, 1]."""

    def fit(self, x: np.ndarray) -> MinMax:
        super().fit(x)
        self.shift = x.min(axis=_axes(x), keepdims=True)[0]
        self.scale = np.maximum(x.max(axis=_axes(x), keepdims=True)[0] - self.shift, EPS)
        return self


class Standard(_Affine):
    """x' = (x − mean) / std, the training data's statistics."""

    def fit(self, x: np.ndarray) -> Standard:
        super().fit(x)
        self.shift = x.mean(axis=_axes(x), keepdims=True)[0]
        self.scale = np.maximum(x.std(axis=_axes(x), keepdims=True)[0], EPS)
        return self


class Pca(Normalizer):
    """Whitened principal-component scores of the flattened input: shape (N, D), the components
    in order of decreasing variance. Directions in which the training data does not vary (all of
    them beyond the N-th when N < D) score 0.
    """

    def fit(self, x: np.ndarray) -> Pca:
        super().fit(x)
        flat = x.reshape(len(x), -1).astype(np.float64)  # (N, D)
        self.dim = flat.shape[1]
        self.mean = flat.mean(axis=0)  # (D,)
        var, components = _principal_axes(flat - self.mean)  # (k,), (k, D)
        kept = var > PCA_RTOL * max(float(var.max(initial=0.0)), EPS)
        self.components = components[kept]
        self.std = np.sqrt(var[kept])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        scores = (x.reshape(len(x), -1) - self.mean) @ self.components.T / self.std  # (N, k)
        return super().transform(_pad(scores, self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, components, std = self._tensors(x, self.mean, self.components, self.std)
        scores = (x.flatten(1) - mean) @ components.T / std  # (B, *shape) -> (B, k)
        return torch.nn.functional.pad(scores, (0, self.dim - len(std)))  # -> (B, D)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        mean, components, std = self._tensors(x, self.mean, self.components, self.std)
        flat = (x[:, : len(std)] * std) @ components + mean  # (B, D) -> (B, D)
        return flat.reshape(len(x), *self.shape)  # -> (B, *shape)


def _principal_axes(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variances (descending) and unit principal directions of centred data `(N, D)`.

    Eigen-decomposes the smaller of the D×D covariance and the N×N Gram matrix: a few hundred
    CIFAR images (D = 3072) then cost an N×N problem, not a 3072×3072 one.
    """
    n, d = centred.shape
    ddof = max(n - 1, 1)
    if n < d:
        var, u = np.linalg.eigh(centred @ centred.T / ddof)  # ascending
        var, u = var[::-1].clip(min=0), u[:, ::-1]
        directions = centred.T @ u  # (D, N), columns of norm sqrt(var · ddof)
        directions /= np.maximum(np.linalg.norm(directions, axis=0), EPS)
        return var, directions.T
    var, vectors = np.linalg.eigh(centred.T @ centred / ddof)
    return var[::-1].clip(min=0), vectors[:, ::-1].T


def _pad(scores: np.ndarray, dim: int) -> np.ndarray:
    return np.pad(scores, ((0, 0), (0, dim - scores.shape[1])))


NORMALIZERS: dict[str, type[Normalizer]] = {
    "none": Normalizer,
    "minmax": MinMax,
    "standard": Standard,
    "pca": Pca,
}
