"""Argument checks shared by the model files: one ValueError naming the argument, the value and
what is allowed, for any value (a wrong type included), never a TypeError from deeper in."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from regzoo._checks import is_int, is_number

# Widths, channels, classes and input sizes: far beyond what a layer can be allocated with,
# and below the sizes at which torch overflows its C integers instead of saying so.
MAX_SIZE = 2**16
MAX_LAYERS = 1024
MAX_KERNEL = 1023


def is_size(value: Any, low: int = 1, high: int = MAX_SIZE) -> bool:
    return is_int(value, low, high)


def check_size(name: str, value: Any, *, low: int = 1, high: int = MAX_SIZE) -> None:
    if not is_size(value, low, high):
        raise ValueError(f"{name}={value!r} is invalid; allowed: an integer in [{low}, {high}]")


def check_sizes(name: str, values: Any, *, empty_ok: bool) -> None:
    """A sequence of layer sizes, each an integer in [1, MAX_SIZE]."""
    if not (is_sequence(values) and (empty_ok or len(values) > 0) and all(map(is_size, values))):
        raise ValueError(
            f"{name}={values!r} is invalid; allowed: a sequence of integers in [1, {MAX_SIZE}]"
            + (" (or empty)" if empty_ok else "")
        )


def check_dropout(value: Any) -> None:
    """Every model's `dropout`: a probability, so a bool (an int to Python) is refused too."""
    if not is_number(value) or not 0 <= value < 1:
        raise ValueError(f"dropout={value!r} is invalid; allowed: a number in [0, 1)")


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid; allowed: True or False")


def check_choice(name: str, value: Any, allowed: Collection[str]) -> None:
    # `in` a dict hashes its operand: an unhashable value would raise TypeError.
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid; allowed: {', '.join(allowed)}")


def is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def refuse_pca(model: str, training: dict[str, Any]) -> None:
    """cnn and rnn read a spatial or step axis, which `pca`'s whitened vectors (D,) lack."""
    if training.get("normalize") == "pca":
        raise ValueError(
            f"normalize='pca' is invalid for {model}: its whitened scores are a vector (D,) "
            f"without the spatial or step axis {model} reads; allowed: none, minmax, standard "
            "(or use 'fnn' or 'linear' with pca)"
        )
