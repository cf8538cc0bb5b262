"""Building blocks shared by the model files: activations and parameter initialization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn


class Abs(nn.Module):
    """Absolute-value rectification g(z) = |z|: mirror points share an output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "abs": Abs,
    "identity": nn.Identity,
}

INITS = ("default", "zeros", "constant", "normal", "uniform", "xavier", "kaiming")

# Kaiming's gain keeps E[g(z)²] = E[z²] layer to layer. ReLU-like units zero half their input
# (gain √2); |z| keeps all of it (E[|z|²] = E[z²], gain 1, like the identity).
KAIMING_GAIN_OF: dict[str, Literal["relu", "linear", "tanh", "sigmoid"]] = {
    "relu": "relu",
    "leaky_relu": "relu",
    "gelu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "abs": "linear",
    "identity": "linear",
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def is_weight(param: torch.Tensor) -> bool:
    """Weights are matrices and kernels; biases and norm scales/shifts are vectors."""
    return param.ndim >= 2


@torch.no_grad()
def initialize(
    module: nn.Module, scheme: str, *, std: float, bound: float, value: float, gain_of: str
) -> None:
    """Re-initialize every weight of `module` with `scheme`; biases start at 0.

    `default` keeps PyTorch's own per-layer initialization (biases included). Norm layers keep
    their scale 1 and shift 0, whatever the scheme. `gain_of` names the activation whose gain
    `kaiming` uses (`KAIMING_GAIN_OF`).
    """
    if scheme == "default":
        return
    nonlinearity = KAIMING_GAIN_OF.get(gain_of, "relu")
    norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    for sub in module.modules():
        if isinstance(sub, norm_types):
            continue
        for name, p in sub.named_parameters(recurse=False):
            if not is_weight(p) or scheme == "zeros":
                nn.init.zeros_(p)
            elif scheme == "constant":
                nn.init.constant_(p, value)
            elif scheme == "normal":
                nn.init.normal_(p, 0.0, std)
            elif scheme == "uniform":
                nn.init.uniform_(p, -bound, bound)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(p)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(p, nonlinearity=nonlinearity)
            else:
                raise ValueError(f"unknown init {scheme!r} for {name}; allowed: {', '.join(INITS)}")
