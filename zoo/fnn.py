"""Feedforward network (multilayer perceptron): the course's fully connected classifier.

It flattens any input, `(C, H, W)`, `(C, L)` or `(D,)`. With `hidden=(d1, d2)` and ReLU it is
the lecture's two-hidden-layer network: h1 = ReLU(X·W1ᵀ + b1), h2 = ReLU(h1·W2ᵀ + b2),
Y = softmax(h2·Wᵀ + b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from regzoo.zoo._checks import check_choice, check_dropout, check_sizes
from regzoo.zoo._layers import ACTIVATIONS
from regzoo.zoo._layers import activation as make_activation
from regzoo.zoo._registry import register_model
from regzoo.zoo.classifier import Classifier


def dense_block(
    d_in: int, d_out: int, *, bias: bool, batchnorm: bool, act: str, dropout: float
) -> nn.Sequential:
    """linear -> [batchnorm] -> activation -> [dropout]."""
    layers: list[nn.Module] = [nn.Linear(d_in, d_out, bias=bias)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(d_out))
    layers.append(make_activation(act))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@register_model("fnn")
class FNN(Classifier):
    """Hidden layers of widths `hidden`, each linear -> [batchnorm] -> activation -> [dropout].

    Args:
        hidden: Widths of the hidden layers; `()` leaves softmax regression.
        dropout: Probability of zeroing each hidden unit's output while training.
        bias: Whether the hidden layers have biases (the lecture's XOR network has none); the
            output layer always has one.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
        bias: bool = True,
        **training: Any,
    ) -> None:
        _check_architecture(hidden, activation, dropout, batchnorm, bias)
        super().__init__(input_shape, num_classes, **training)

    def build_network(self) -> nn.Module:
        hp = self.hp
        layers: list[nn.Module] = [nn.Flatten()]  # (B, *input_shape) -> (B, D)
        features = math.prod(self.input_shape)
        for width in hp.hidden:
            block = dense_block(
                features,
                width,
                bias=hp.bias,
                batchnorm=hp.batchnorm,
                act=hp.activation,
                dropout=hp.dropout,
            )
            layers.append(block)  # (B, d_in) -> (B, width)
            features = width
        layers.append(nn.Linear(features, hp.num_classes))  # (B, d_last) -> (B, num_classes)
        return nn.Sequential(*layers)


def _check_architecture(
    hidden: Sequence[int], activation: str, dropout: float, batchnorm: bool, bias: bool
) -> None:
    check_sizes("hidden", hidden, empty_ok=True)
    check_choice("activation", activation, ACTIVATIONS)
    check_dropout(dropout)
    for name, flag in (("batchnorm", batchnorm), ("bias", bias)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}={flag!r} is invalid; allowed: True or False")
