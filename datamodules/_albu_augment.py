"""The `albumentations` augmentation backend: one sample at a time, in the DataLoader workers.

Images use albumentations' own `Affine`, `HorizontalFlip`, `VerticalFlip` and `GaussNoise`.
1-D signals are a 1×L image to `Affine` (scaled and shifted along x only) and get unclipped
noise: `GaussNoise` clips float images to [0, 1], which would wreck a standardized signal.
Point sets, which albumentations has no target for, get a small transform of the same kind
(`PointJitter`). All run inside one strict `Compose` whose random stream each worker reseeds.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from regzoo.datamodules._augment import AugmentSpec, data_kind

# albumentations asks PyPI for a newer version on import unless told not to: no network here.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2
from albumentations.core.transforms_interface import BaseTransformInitSchema


class SubpixelAffine(A.Affine):
    """`A.Affine` whose translation is not rounded to whole pixels.

    albumentations 2.0.8 truncates `translate_percent × width` to an int, so on 8×8 digits every
    shift under 1/8 of the width vanished and larger ones lost up to a pixel; the device backend
    shifts by fractions of a pixel, and the two must agree. So the shift, `translate_fraction` of
    the width and height, is drawn here and composed with the matrix `A.Affine` builds (with no
    translation of its own) through the public `get_params_dependent_on_data` hook.
    """

    def __init__(
        self, *, translate_fraction: dict[str, tuple[float, float]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.translate_fraction = translate_fraction

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        dx = self.py_random.uniform(*self.translate_fraction["x"]) * width
        dy = self.py_random.uniform(*self.translate_fraction["y"]) * height
        affine = super().get_params_dependent_on_data(params, data)
        # Affine's matrix is centre · translation · shear · rotation · scale · centre⁻¹, and
        # translations commute: moving its output is the same as a translation inside it.
        move = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        return {
            **affine,
            "matrix": move @ affine["matrix"],
            "bbox_matrix": move @ affine["bbox_matrix"],
        }


class GaussianJitter(A.ImageOnlyTransform):
    """Adds N(0, std²) noise to every value, with no clipping (for signals of any range)."""

    class InitSchema(BaseTransformInitSchema):
        std: float

    def __init__(self, std: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.std = std

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"noise": self.random_generator.normal(0.0, self.std, params["shape"])}

    def apply(self, img: np.ndarray, noise: np.ndarray, **params: Any) -> np.ndarray:
        return (img + noise).astype(np.float32)


class PointJitter(A.ImageOnlyTransform):
    """Zoom about `centre`, shift by up to `shift × extent`, add N(0, noise²): one point, stored
    as a 1×1×D "image"."""

    class InitSchema(BaseTransformInitSchema):
        centre: tuple[float, ...]
        extent: tuple[float, ...]
        zoom: float
        shift: float
        noise: float

    def __init__(
        self,
        centre: tuple[float, ...],
        extent: tuple[float, ...],
        zoom: float,
        shift: float,
        noise: float,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.centre, self.extent = np.asarray(centre), np.asarray(extent)
        self.zoom, self.shift, self.noise = zoom, shift, noise

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        rng, d = self.random_generator, len(self.centre)
        return {
            "scale": rng.uniform(1 - self.zoom, 1 + self.zoom),
            "offset": rng.uniform(-self.shift, self.shift, d) * self.extent,
            "jitter": rng.normal(0.0, self.noise, d),
        }

    def apply(
        self, img: np.ndarray, scale: float, offset: np.ndarray, jitter: np.ndarray, **params: Any
    ) -> np.ndarray:
        point = self.centre + (img - self.centre) * scale + offset + jitter
        return point.astype(np.float32)


def build_transform(
    spec: AugmentSpec,
    shape: tuple[int, ...],
    *,
    seed: int,
    centre: np.ndarray | None = None,
    extent: np.ndarray | None = None,
) -> A.Compose:
    """The per-sample pipeline for raw samples of `shape` (see `datamodules._augment`)."""
    kind = data_kind(shape)
    steps: list[A.BasicTransform] = []
    if kind == "points":
        assert centre is not None and extent is not None
        steps.append(
            PointJitter(
                centre=tuple(centre.tolist()),
                extent=tuple(extent.tolist()),
                zoom=spec.zoom,
                shift=spec.shift,
                noise=spec.noise,
            )
        )
    elif kind == "signal":
        if spec.zoom or spec.shift:
            steps.append(
                _affine(
                    scale={"x": (1 - spec.zoom, 1 + spec.zoom), "y": (1.0, 1.0)},
                    translate_fraction={"x": (-spec.shift, spec.shift), "y": (0.0, 0.0)},
                )
            )
        if spec.noise:
            steps.append(GaussianJitter(std=spec.noise))
    else:
        steps.extend(_image_steps(spec))
    transform = A.Compose(steps, p=spec.p, strict=True)
    reseed(transform, seed)
    return transform


def reseed(transform: A.Compose, seed: int) -> None:
    """Give the pipeline and all its transforms one shared random stream started from `seed`.

    Not `Compose(seed=...)` / `set_random_seed`: albumentations 2.0.8 seeds each transform's own
    generator with the same seed, so the transforms draw identical numbers — `HorizontalFlip`
    and `VerticalFlip` then always agree, and the pipeline's `p` coin equals the first
    transform's. One shared generator makes the draws independent.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _image_steps(spec: AugmentSpec) -> list[A.BasicTransform]:
    steps: list[A.BasicTransform] = []
    if spec.geometric:
        steps.append(
            _affine(
                rotate=(-spec.rotation, spec.rotation),
                scale=(1 - spec.zoom, 1 + spec.zoom),
                keep_ratio=True,
                translate_fraction={"x": (-spec.shift, spec.shift), "y": (-spec.shift, spec.shift)},
            )
        )
    if spec.flip in ("horizontal", "both"):
        steps.append(A.HorizontalFlip(p=0.5))
    if spec.flip in ("vertical", "both"):
        steps.append(A.VerticalFlip(p=0.5))
    if spec.noise:
        steps.append(A.GaussNoise(std_range=(spec.noise, spec.noise), mean_range=(0, 0), p=1.0))
    return steps


def _affine(**kwargs: Any) -> SubpixelAffine:
    return SubpixelAffine(
        **kwargs, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0
    )


# ---- one raw sample <-> albumentations' HWC layout ----------------------------------------------


def to_hwc(sample: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C); a signal (C, L) -> (1, L, C); a point (D,) -> (1, 1, D)."""
    if sample.ndim == 3:
        return np.ascontiguousarray(sample.transpose(1, 2, 0))
    if sample.ndim == 2:
        return np.ascontiguousarray(sample.T[None])
    return sample[None, None]


def from_hwc(batch: np.ndarray, ndim: int) -> np.ndarray:
    """Inverse of `to_hwc` for a stacked batch `(B, H, W, C)`; `ndim` is one raw sample's."""
    if ndim == 3:
        return batch.transpose(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    if ndim == 2:
        return batch[:, 0].transpose(0, 2, 1)  # (B, 1, L, C) -> (B, C, L)
    return batch[:, 0, 0]  # (B, 1, 1, D) -> (B, D)


def augment_samples(transform: A.Compose, raw: np.ndarray) -> np.ndarray:
    """Apply `transform` to each raw sample of `raw` `(B, *shape)`, one at a time."""
    out = [transform(image=to_hwc(sample))["image"] for sample in raw]
    return from_hwc(np.stack(out), raw.ndim - 1)


class AugmentedBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Raw training samples, augmented one by one, a batch per index list (the model
    normalizes them)."""

    def __init__(self, raw: np.ndarray, y: torch.Tensor, transform: A.Compose) -> None:
        self.raw, self.y, self.transform = raw, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = augment_samples(self.transform, self.raw[idx])
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.y[idx]


def reseed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: give each worker's transform its own random stream.

    Forked workers inherit one `Compose` generator state, so without this every worker would
    repeat the others' augmentations. torch's per-worker seed differs by worker and by epoch.
    """
    info = get_worker_info()
    assert info is not None
    if isinstance(info.dataset, AugmentedBatches):
        reseed(info.dataset.transform, info.seed % 2**32)
