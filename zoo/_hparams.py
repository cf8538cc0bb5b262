"""Hyperparameters as plain Python, the only values a `weights_only` checkpoint can hold."""

from __future__ import annotations

from typing import Any


def plain_hparam(name: str, value: Any) -> Any:
    """`value` as plain Python (None, bool, int, float, str, tuples of them).

    A checkpoint loads with `weights_only=True` only if its hparams are plain: a numpy scalar
    (say `np.int64` from an array's shape) would make torch refuse the file.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / torch scalar
        return plain_hparam(name, value.item())
    if isinstance(value, list | tuple) or getattr(value, "ndim", None) == 1:
        return tuple(plain_hparam(name, v) for v in value)
    raise ValueError(
        f"{name}={value!r} is invalid; allowed: None, bool, int, float, str or a sequence of them"
    )
