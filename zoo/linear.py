"""Softmax regression: the baseline every other model has to beat.

It flattens any input, `(C, H, W)`, `(C, L)` or `(D,)`, and maps it to class logits with one
affine layer, so its decision boundaries are hyperplanes (it cannot solve XOR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from regzoo.zoo._registry import register_model
from regzoo.zoo.classifier import Classifier


@register_model("linear")
class Linear(Classifier):
    """Z = x·Wᵀ + b on the flattened input; softmax of Z gives the class probabilities."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, **training: Any) -> None:
        super().__init__(input_shape, num_classes, **training)

    def build_network(self) -> nn.Module:
        features = math.prod(self.input_shape)
        return nn.Sequential(
            nn.Flatten(),  # (B, *input_shape) -> (B, D)
            nn.Linear(features, self.hp.num_classes),  # (B, D) -> (B, num_classes)
        )
