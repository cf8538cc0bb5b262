"""Convolutional network: conv blocks, then a fully connected head.

Conv2d for images `(C, H, W)`, Conv1d for signals `(C, L)`; a feature vector `(D,)` has no
spatial axis and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from regzoo._checks import is_int
from regzoo.zoo._checks import (
    MAX_KERNEL,
    check_choice,
    check_dropout,
    check_flag,
    check_sizes,
    is_sequence,
    is_size,
    refuse_pca,
)
from regzoo.zoo._layers import ACTIVATIONS
from regzoo.zoo._layers import activation as make_activation
from regzoo.zoo._registry import register_model
from regzoo.zoo.classifier import Classifier


def conv_block(
    dims: int, c_in: int, c_out: int, *, kernel_size: int, pool: int, batchnorm: bool, act: str
) -> nn.Sequential:
    """conv (same padding) -> [batchnorm] -> activation -> [max-pool]."""
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    pooling = nn.MaxPool2d if dims == 2 else nn.MaxPool1d
    layers: list[nn.Module] = [conv(c_in, c_out, kernel_size, padding=kernel_size // 2)]
    if batchnorm:
        layers.append(norm(c_out))
    layers.append(make_activation(act))
    if pool > 1:
        layers.append(pooling(pool))
    return nn.Sequential(*layers)


@register_model("cnn")
class CNN(Classifier):
    """Conv blocks (`channels`, one block each) and an MLP head (`hidden`) with dropout.

    A block pools only while the spatial size stays at least `pool`, so small inputs (8×8
    digits) keep a valid shape with several blocks.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        pool: int = 2,
        batchnorm: bool = False,
        dropout: float = 0.0,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        **training: Any,
    ) -> None:
        shown = tuple(input_shape) if is_sequence(input_shape) else input_shape
        if not is_sequence(input_shape) or len(input_shape) not in (2, 3):
            raise ValueError(
                f"cnn needs an image (C, H, W) or a signal (C, L), got input_shape="
                f"{shown!r}; use 'fnn' or 'linear' for feature vectors"
            )
        _check_architecture(channels, kernel_size, pool, dropout, hidden)
        check_flag("batchnorm", batchnorm)
        check_choice("activation", activation, ACTIVATIONS)
        refuse_pca("cnn", training)
        super().__init__(input_shape, num_classes, **training)

    def build_network(self) -> nn.Module:
        hp = self.hp
        dims = len(self.input_shape) - 1
        c, *spatial = self.input_shape
        blocks: list[nn.Module] = []
        for width in hp.channels:
            pool = hp.pool if min(spatial) >= hp.pool else 1
            blocks.append(
                conv_block(
                    dims,
                    c,
                    width,
                    kernel_size=hp.kernel_size,
                    pool=pool,
                    batchnorm=hp.batchnorm,
                    act=hp.activation,
                )
            )
            c, spatial = width, [s // pool for s in spatial]
        head: list[nn.Module] = [nn.Flatten()]  # (B, C', *S') -> (B, C'·ΠS')
        features = c * _prod(spatial)
        for width in hp.hidden:
            head += [nn.Dropout(hp.dropout), nn.Linear(features, width)]
            head.append(make_activation(hp.activation))
            features = width
        head += [nn.Dropout(hp.dropout), nn.Linear(features, hp.num_classes)]
        return nn.Sequential(*blocks, *head)  # (B, C, *S) -> (B, num_classes)


def _check_architecture(
    channels: Sequence[int], kernel_size: int, pool: int, dropout: float, hidden: Sequence[int]
) -> None:
    check_sizes("channels", channels, empty_ok=False)
    check_sizes("hidden", hidden, empty_ok=True)
    if not is_size(kernel_size, 1, MAX_KERNEL) or kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size={kernel_size!r} is invalid; allowed: odd integers in [1, {MAX_KERNEL}]"
        )
    if not is_int(pool, low=1):
        raise ValueError(f"pool={pool!r} is invalid; allowed: integers >= 1 (1: no pooling)")
    check_dropout(dropout)


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out
