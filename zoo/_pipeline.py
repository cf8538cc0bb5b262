"""A model's input pipeline: the normalization fitted on its training split, held as buffers.

Every zoo model takes the dataset's raw inputs. `normalize` is applied inside `forward`, from
statistics saved with the weights (checkpoint, `model.safetensors`, the exported ONNX and
`torch.export` programs), so a reused model needs nothing but raw inputs:

    none      x
    minmax    (x − min) / (max − min)          per channel (images, signals) or feature
    standard  (x − mean) / std                 likewise
    pca       ((x.flatten() − mean) · Vᵀ) / σ  whitened principal-component scores, (D,)

The statistics come from the training split, once, when training starts (`Classifier.setup`
reads them from the datamodule), or from `fit(x_train)`. Augmentation acts on raw inputs before
the model sees them, so normalization is done exactly once, here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from regzoo._normalize import fit_statistics, normalized_shape, stat_shape


class InputPipeline(nn.Module):
    """Raw inputs `(B, *raw_shape)` -> normalized `(B, *normalized_shape)`, from buffers.

    The buffers' shapes follow from `kind` and `raw_shape` alone, so a checkpoint's statistics
    load into a model rebuilt from its hparams. `fitted` is saved with them: a model whose
    statistics were never set refuses to train or predict instead of passing inputs through.
    """

    shift: torch.Tensor  # minmax, standard: (C, 1, ...) or (D,)
    scale: torch.Tensor
    mean: torch.Tensor  # pca: (D,), (D, D), (D,)
    components: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, kind: str, raw_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.kind, self.raw_shape = kind, raw_shape
        self.output_shape = normalized_shape(raw_shape, kind)
        shapes: dict[str, tuple[int, ...]] = {}
        if kind in ("minmax", "standard"):
            shapes = {"shift": stat_shape(raw_shape), "scale": stat_shape(raw_shape)}
        elif kind == "pca":
            d = math.prod(raw_shape)
            shapes = {"mean": (d,), "components": (d, d), "std": (d,)}
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("fitted", torch.tensor(kind == "none"))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def fit(self, x: np.ndarray | torch.Tensor) -> InputPipeline:
        """Fit the statistics on raw training inputs `(N, *raw_shape)`."""
        array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return self.load_statistics(fit_statistics(self.kind, array))

    def load_statistics(self, stats: Mapping[str, Any]) -> InputPipeline:
        """Set the buffers from fitted statistics (arrays or tensors of the buffers' shapes)."""
        for name, value in stats.items():
            buffer = getattr(self, name)
            tensor = torch.as_tensor(np.asarray(value), dtype=buffer.dtype)
            if tuple(tensor.shape) != tuple(buffer.shape):
                raise ValueError(
                    f"normalize={self.kind!r}: statistic {name!r} has shape "
                    f"{tuple(tensor.shape)}, expected {tuple(buffer.shape)} for inputs "
                    f"{self.raw_shape}"
                )
            buffer.copy_(tensor)
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("minmax", "standard"):
            return (x - self.shift) / self.scale  # (B, *raw_shape), same shape
        if self.kind == "pca":
            return (x.flatten(1) - self.mean) @ self.components.T / self.std  # -> (B, D)
        return x
