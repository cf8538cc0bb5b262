"""What each model file builds: the layers its hparams ask for, and how it reads its input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from regzoo.zoo import create_model


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_linear_is_one_affine_map_of_the_flattened_input() -> None:
    model = create_model("linear", input_shape=(2, 3, 4), num_classes=5)
    (layer,) = linears(model)
    assert layer.weight.shape == (5, 24)
    x = torch.randn(7, 2, 3, 4)
    torch.testing.assert_close(model(x), x.flatten(1) @ layer.weight.T + layer.bias)


def test_fnn_builds_the_hidden_widths_and_optional_layers() -> None:
    model = create_model(
        "fnn", input_shape=(1, 4, 4), num_classes=3, hidden=(8, 6), dropout=0.3, batchnorm=True,
        activation="tanh",
    )  # fmt: skip
    assert [(m.in_features, m.out_features) for m in linears(model)] == [(16, 8), (8, 6), (6, 3)]
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.BatchNorm1d) == 2 and kinds.count(nn.Dropout) == 2
    assert kinds.count(nn.Tanh) == 2


def test_fnn_bias_false_drops_only_the_hidden_biases() -> None:
    model = create_model("fnn", input_shape=(2,), num_classes=2, hidden=(2, 2), bias=False)
    assert [m.bias is None for m in linears(model)] == [True, True, False]


def test_fnn_without_hidden_layers_is_softmax_regression() -> None:
    model = create_model("fnn", input_shape=(5,), num_classes=3, hidden=())
    assert len(linears(model)) == 1


def steps_seen(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The sequence the recurrent layers receive, (B, T, F)."""
    seen: dict[str, torch.Tensor] = {}
    (rnn,) = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    rnn.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    model(x)
    return seen["x"]


def test_rnn_reads_a_signal_as_l_steps_of_c_features() -> None:
    model = create_model("rnn", input_shape=(3, 10), num_classes=2, hidden_size=4)
    x = torch.randn(2, 3, 10)  # (B, C, L)
    seq = steps_seen(model, x)
    assert seq.shape == (2, 10, 3)
    torch.testing.assert_close(seq[:, 4], x[:, :, 4])  # step 4: the C values at position 4


def test_rnn_reads_an_image_as_h_rows_of_c_times_w_features() -> None:
    model = create_model("rnn", input_shape=(2, 5, 7), num_classes=2, hidden_size=4)
    x = torch.randn(3, 2, 5, 7)  # (B, C, H, W)
    seq = steps_seen(model, x)
    assert seq.shape == (3, 5, 14)
    torch.testing.assert_close(seq[:, 1], x[:, :, 1, :].flatten(1))  # step 1: row 1, all C


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_head_sees_each_directions_final_state(cell: str, bidirectional: bool) -> None:
    hparams: dict[str, Any] = {"cell": cell, "hidden_size": 4, "num_layers": 2}
    model = create_model(
        "rnn", input_shape=(3, 6), num_classes=2, bidirectional=bidirectional, **hparams
    ).eval()
    (rnn,) = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    assert type(rnn).__name__ == cell.upper() and rnn.num_layers == 2
    x = torch.randn(2, 3, 6)
    _, h_n = rnn(x.transpose(1, 2))
    h_n = h_n[0] if cell == "lstm" else h_n  # (layers·dirs, B, H)
    last_layer = h_n[-2:] if bidirectional else h_n[-1:]  # (dirs, B, H)
    head = linears(model)[-1]
    expected = torch.cat(list(last_layer), dim=1) @ head.weight.T + head.bias
    torch.testing.assert_close(model(x), expected)
