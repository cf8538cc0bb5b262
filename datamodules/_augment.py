"""The augmentation options, validated once, with the meaning both backends share.

Every option is a strength: each augmented sample draws its own random value up to it.

- `rotation`: degrees; angle uniform in [-rotation, rotation] (images only).
- `flip`: `none|horizontal|vertical|both`; each allowed flip is applied with probability 1/2
  (images only).
- `zoom`: fraction; scale factor uniform in [1 - zoom, 1 + zoom] about the centre.
- `shift`: fraction of the width (and height); offset uniform in [-shift, shift] per axis.
- `noise`: standard deviation of additive gaussian noise, in the raw data's units (images are in
  [0, 1] and stay there: noisy pixels are clipped to that range).
- `p`: probability that a training sample is augmented at all; an augmented sample gets every
  configured transform.

Augmentation acts on the raw input, before `normalize`, as in torchvision's pipelines.
Geometric transforms fill uncovered pixels with 0 (black).

1-D signals `(C, L)` are shifted and zoomed along L. Point sets and feature vectors `(D,)` are
jittered:
`zoom` scales a point about the centre of the training data's bounding box, `shift` moves it by
up to `shift` times the box's width per coordinate, `noise` adds gaussian jitter. Rotation and
flip have no meaning for signals and points and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

AUGMENT_KEYS = ("rotation", "flip", "zoom", "shift", "noise", "p")
FLIPS = ("none", "horizontal", "vertical", "both")
BACKENDS = ("device", "albumentations")
# (low, high, inclusive high, what the value means)
RANGES: dict[str, tuple[float, float, bool, str]] = {
    "rotation": (0.0, 180.0, True, "degrees in [0, 180]"),
    "zoom": (0.0, 1.0, False, "a fraction in [0, 1)"),
    "shift": (0.0, 1.0, True, "a fraction of the width in [0, 1]"),
    "noise": (0.0, math.inf, False, "a standard deviation >= 0"),
    "p": (0.0, 1.0, True, "a probability in [0, 1]"),
}


@dataclass(frozen=True)
class AugmentSpec:
    """Validated augmentation options (see the module docstring for their meaning)."""

    rotation: float = 0.0
    flip: str = "none"
    zoom: float = 0.0
    shift: float = 0.0
    noise: float = 0.0
    p: float = 1.0

    @property
    def active(self) -> bool:
        """Whether any transform is configured (and can happen, p > 0)."""
        strengths = (self.rotation, self.zoom, self.shift, self.noise)
        return self.p > 0 and (any(strengths) or self.flip != "none")

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.zoom or self.shift)


def data_kind(shape: tuple[int, ...]) -> str:
    """`image` for (C, H, W), `signal` for (C, L), `points` for (D,)."""
    return {3: "image", 2: "signal", 1: "points"}[len(shape)]


def parse_augment(augment: Any) -> AugmentSpec:
    """Check an `augment` mapping: known keys, numbers in range, a known flip."""
    if augment is None:
        return AugmentSpec()
    if not isinstance(augment, dict):
        raise ValueError(
            f"augment={augment!r} is invalid; allowed: a mapping of {', '.join(AUGMENT_KEYS)}"
        )
    unknown = sorted(map(str, set(augment) - set(AUGMENT_KEYS)))  # keys of any type
    if unknown:
        raise ValueError(
            f"augment got unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(AUGMENT_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, value in augment.items():
        if key == "flip":
            if value not in FLIPS:
                raise ValueError(f"augment.flip={value!r} is invalid; allowed: {', '.join(FLIPS)}")
            values[key] = value
        else:
            values[key] = _number(key, value)
    return AugmentSpec(**values)


def _number(key: str, value: Any) -> float:
    low, high, closed, meaning = RANGES[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = (
        ok
        and not math.isnan(value)
        and low <= value
        and (value <= high if closed else value < high)
    )
    if not ok:
        raise ValueError(f"augment.{key}={value!r} is invalid; allowed: {meaning}")
    return float(value)


def check_fits_data(spec: AugmentSpec, shape: tuple[int, ...], dataset: str) -> None:
    """Refuse rotation and flip where the data has no plane to turn or mirror, and image noise
    larger than the whole [0, 1] pixel range."""
    kind = data_kind(shape)
    if kind == "image":
        if spec.noise > 1:
            raise ValueError(
                f"augment.noise={spec.noise:g} is invalid for images in [0, 1] (dataset "
                f"{dataset!r}); allowed: a standard deviation in [0, 1]"
            )
        return
    what = "1-D signals" if kind == "signal" else "point sets"
    if spec.rotation:
        raise ValueError(
            f"augment.rotation={spec.rotation:g} makes no sense for {what} (dataset {dataset!r}, "
            f"input shape {shape}); allowed: 0 (rotation is for images)"
        )
    if spec.flip != "none":
        raise ValueError(
            f"augment.flip={spec.flip!r} makes no sense for {what} (dataset {dataset!r}, "
            f"input shape {shape}); allowed: 'none' (flips are for images)"
        )


def check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"augment_backend={backend!r} is invalid; allowed: {', '.join(BACKENDS)}")
    return str(backend)
