"""Input normalization statistics, fitted on a training split: shared by the datamodules (which
fit them) and the models (which hold and apply them, `regzoo.zoo._pipeline`).

    none      x
    minmax    (x − min) / (max − min)          per channel (images, signals) or feature
    standard  (x − mean) / std                 likewise
    pca       ((x.flatten() − mean) · Vᵀ) / σ  whitened principal-component scores, (D,)
"""

from __future__ import annotations

import math

import numpy as np

NORMALIZATIONS = ("none", "minmax", "standard", "pca")
EPS = 1e-8
# Principal directions whose variance is below this share of the largest are noise; whitening
# them would blow rounding errors up to unit variance, so they score 0.
PCA_RTOL = 1e-10


def normalized_shape(raw_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The shape the network sees: the raw shape, or `(D,)` under `pca`."""
    return (math.prod(raw_shape),) if kind == "pca" else raw_shape


def stat_shape(raw_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-channel statistics of `(C, ...)` inputs broadcast as `(C, 1, ...)`; per feature of
    `(D,)` vectors as `(D,)`."""
    if len(raw_shape) == 1:
        return raw_shape
    return (raw_shape[0], *([1] * (len(raw_shape) - 1)))


def fit_statistics(kind: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of `kind` on raw training inputs `x` `(N, *shape)`, as float64 arrays."""
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    if kind == "minmax":
        low = x.min(axis=axes, keepdims=True)[0]
        return {"shift": low, "scale": np.maximum(x.max(axis=axes, keepdims=True)[0] - low, EPS)}
    if kind == "standard":
        return {
            "shift": x.mean(axis=axes, keepdims=True)[0],
            "scale": np.maximum(x.std(axis=axes, keepdims=True)[0], EPS),
        }
    if kind == "pca":
        flat = x.reshape(len(x), -1)  # (N, D)
        mean = flat.mean(axis=0)  # (D,)
        var, directions = _principal_axes(flat - mean)  # (k,), (k, D)
        kept = var > PCA_RTOL * max(float(var.max(initial=0.0)), EPS)
        d = flat.shape[1]
        components = np.zeros((d, d))  # rows past the kept directions score 0
        components[: kept.sum()] = directions[kept]
        std = np.ones(d)
        std[: kept.sum()] = np.sqrt(var[kept])
        return {"mean": mean, "components": components, "std": std}
    return {}


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
