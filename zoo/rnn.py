"""Recurrent network (plain RNN, LSTM or GRU) reading its input as a sequence of steps.

A signal `(C, L)` is read as L steps of C features; an image `(C, H, W)` as H steps (its rows)
of C·W features. A feature vector `(D,)` has no step axis and is refused: its order is
arbitrary, so reading its features one by one would invent a sequence (give it as a `(1, D)`
signal if it really is one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from regzoo.zoo._checks import (
    MAX_LAYERS,
    check_choice,
    check_dropout,
    check_size,
    is_sequence,
    refuse_pca,
)
from regzoo.zoo._registry import register_model
from regzoo.zoo.classifier import Classifier

CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class ToSteps(nn.Module):
    """(B, C, L) -> (B, L, C) for a signal; (B, C, H, W) -> (B, H, C·W) for an image."""

    def __init__(self, image: bool) -> None:
        super().__init__()
        self.image = image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image:
            return x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C·W)
        return x.transpose(1, 2)  # (B, C, L) -> (B, L, C)


class LastState(nn.Module):
    """Runs the recurrent layers and returns each direction's state after its last step."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.hidden_size = rnn.hidden_size
        self.bidirectional = rnn.bidirectional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, F) -> (B, T, dirs·H)
        h = self.hidden_size
        last = out[:, -1, :h]  # forward direction after step T: (B, H)
        if self.bidirectional:
            # The backward direction reads T..1, so its last state sits at step 1.
            last = torch.cat([last, out[:, 0, h:]], dim=1)  # (B, H) -> (B, 2H)
        return last


@register_model("rnn")
class RNN(Classifier):
    """Recurrent layers (`cell`), then dropout and a linear layer on the final states.

    Args:
        cell: `rnn` (tanh Elman cell), `lstm` or `gru`.
        hidden_size: State size of each layer and direction.
        num_layers: Stacked recurrent layers.
        bidirectional: Also read the sequence backwards; the head sees both final states.
        dropout: Dropout between stacked layers (torch's own) and on the final states
            before the head, so it acts with a single layer too.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        cell: str = "gru",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        **training: Any,
    ) -> None:
        shown = tuple(input_shape) if is_sequence(input_shape) else input_shape
        if not is_sequence(input_shape) or len(input_shape) not in (2, 3):
            raise ValueError(
                f"rnn needs a signal (C, L) or an image (C, H, W), got input_shape="
                f"{shown!r}; use 'fnn' or 'linear' for feature vectors, or pass "
                "(1, D) to read the D features as a sequence"
            )
        _check_architecture(cell, hidden_size, num_layers, bidirectional, dropout)
        refuse_pca("rnn", training)
        super().__init__(input_shape, num_classes, **training)

    def init_gain_of(self) -> str:
        return "tanh"  # the cells' own nonlinearity

    def build_network(self) -> nn.Module:
        hp = self.hp
        image = len(self.input_shape) == 3
        c, *rest = self.input_shape
        features = c * rest[1] if image else c
        rnn = CELLS[hp.cell](
            features,
            hp.hidden_size,
            num_layers=hp.num_layers,
            batch_first=True,
            # torch applies it only between layers (and warns with one layer).
            dropout=hp.dropout if hp.num_layers > 1 else 0.0,
            bidirectional=hp.bidirectional,
        )
        directions = 2 if hp.bidirectional else 1
        return nn.Sequential(
            ToSteps(image),  # (B, *input_shape) -> (B, T, F)
            LastState(rnn),  # (B, T, F) -> (B, dirs·H)
            nn.Dropout(hp.dropout),
            nn.Linear(directions * hp.hidden_size, hp.num_classes),  # -> (B, num_classes)
        )


def _check_architecture(
    cell: str, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
) -> None:
    check_choice("cell", cell, CELLS)
    check_size("hidden_size", hidden_size)
    check_size("num_layers", num_layers, high=MAX_LAYERS)
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional={bidirectional!r} is invalid; allowed: True or False")
    check_dropout(dropout)
