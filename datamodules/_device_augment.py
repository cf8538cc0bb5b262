"""The `device` augmentation backend: whole batches at once, on whatever device they are on.

Images go through kornia (one affine warp for rotation, zoom and shift; flips); 1-D signals
through one `grid_sample` warp along their length; point sets through tensor arithmetic. The
random draws come from torch's global generator, so `seed_everything` makes a run repeatable.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from datamodules._augment import AugmentSpec, data_kind


class DeviceAugmenter:
    """Augments a raw batch `(B, *shape)` as `spec` says (see `datamodules._augment`).

    Args:
        spec: The validated options.
        shape: One raw sample's shape; its length picks the image, signal or point-set path.
        centre: Point sets: the centre of the training data's bounding box, `(D,)`.
        extent: Point sets: the width of that box per coordinate, `(D,)`.
    """

    def __init__(
        self,
        spec: AugmentSpec,
        shape: tuple[int, ...],
        *,
        centre: torch.Tensor | None = None,
        extent: torch.Tensor | None = None,
    ) -> None:
        self.spec = spec
        self.kind = data_kind(shape)
        self.centre, self.extent = centre, extent
        self.geometry = _kornia_geometry(spec) if self.kind == "image" else nn.Identity()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.p >= 1:
            return self._augment(x)
        chosen = torch.rand(len(x), device=x.device) < self.spec.p  # (B,)
        out = x.clone()
        out[chosen] = self._augment(x[chosen])
        return out

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            return self._image(x)
        if self.kind == "signal":
            return self._signal(x)
        return self._points(x)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        x = self.geometry(x)  # (B, C, H, W)
        if self.spec.noise:
            x = (x + self.spec.noise * torch.randn_like(x)).clamp_(0.0, 1.0)
        return x

    def _signal(self, x: torch.Tensor) -> torch.Tensor:
        spec, b = self.spec, len(x)
        if spec.zoom or spec.shift:
            scale = _uniform(b, 1 - spec.zoom, 1 + spec.zoom, x)  # (B,)
            # grid_sample's coordinates span [-1, 1]: a shift of a fraction f of L is 2f there.
            offset = 2 * _uniform(b, -spec.shift, spec.shift, x)  # (B,)
            theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
            theta[:, 0, 0] = 1 / scale
            theta[:, 0, 2] = -offset / scale
            theta[:, 1, 1] = 1
            plane = x.unsqueeze(2)  # (B, C, L) -> (B, C, 1, L)
            grid = F.affine_grid(theta, list(plane.shape), align_corners=False)
            x = F.grid_sample(plane, grid, align_corners=False).squeeze(2)  # -> (B, C, L)
        if spec.noise:
            x = x + spec.noise * torch.randn_like(x)
        return x

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        spec, b = self.spec, len(x)
        assert self.centre is not None and self.extent is not None
        centre, extent = self.centre.to(x), self.extent.to(x)  # (D,)
        if spec.zoom:
            x = centre + (x - centre) * _uniform(b, 1 - spec.zoom, 1 + spec.zoom, x)[:, None]
        if spec.shift:
            x = x + (2 * torch.rand_like(x) - 1) * spec.shift * extent  # (B, D)
        if spec.noise:
            x = x + spec.noise * torch.randn_like(x)
        return x


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)


def _kornia_geometry(spec: AugmentSpec) -> nn.Module:
    """rotation, zoom and shift as one warp (one interpolation), then the flips."""
    steps: list[nn.Module] = []
    if spec.geometric:
        steps.append(
            K.RandomAffine(
                degrees=spec.rotation,
                translate=(spec.shift, spec.shift) if spec.shift else None,
                scale=(1 - spec.zoom, 1 + spec.zoom) if spec.zoom else None,
                padding_mode="zeros",
                p=1.0,
            )
        )
    if spec.flip in ("horizontal", "both"):
        steps.append(K.RandomHorizontalFlip(p=0.5))
    if spec.flip in ("vertical", "both"):
        steps.append(K.RandomVerticalFlip(p=0.5))
    return nn.Sequential(*steps)
