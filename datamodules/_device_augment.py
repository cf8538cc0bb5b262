"""The `device` augmentation backend: whole batches at once, on whatever device they are on.

Images and 1-D signals get one `affine_grid` + `grid_sample` warp per batch: rotation, zoom,
shift and the flips are all affine maps, so they compose into one matrix per sample and one
interpolation (a flip alone maps pixel centres onto pixel centres, so it stays exact). Noise is
`randn_like`; point sets get plain tensor arithmetic. The random draws come from torch's global
generator, so `seed_everything` makes a run repeatable.

Why not kornia.augmentation: profiled on the benchmark (`python -m benchmarks.augmentation
--profile`), its `RandomAffine` spent about 1.3 ms per batch of 64 8×8 digits in Python
(parameter sampling, checks, matrix bookkeeping) against 0.12 ms for the warp written here; on
small images that overhead alone broke the 1.25× epoch budget. The ops below are the same ones
kornia calls underneath.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regzoo.datamodules._augment import AugmentSpec, data_kind


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
        spec = self.spec
        if spec.geometric or spec.flip != "none":
            x = random_affine(
                x,
                spec.rotation,
                spec.zoom,
                spec.shift,
                spec.shift,
                flip_x=spec.flip in ("horizontal", "both"),
                flip_y=spec.flip in ("vertical", "both"),
            )
        if spec.noise:
            x = (x + spec.noise * torch.randn_like(x)).clamp_(0.0, 1.0)
        return x

    def _signal(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.zoom or spec.shift:
            plane = x.unsqueeze(2)  # (B, C, L) -> (B, C, 1, L): a one-row image
            x = random_affine(plane, 0.0, spec.zoom, spec.shift, 0.0).squeeze(2)  # -> (B, C, L)
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


def random_affine(
    x: torch.Tensor,
    degrees: float,
    zoom: float,
    shift_x: float,
    shift_y: float,
    *,
    flip_x: bool = False,
    flip_y: bool = False,
) -> torch.Tensor:
    """Rotate by U[-degrees, degrees], scale by U[1 - zoom, 1 + zoom] about the centre, shift by
    U[-shift, shift] of the width (height), then mirror each allowed axis with probability 1/2;
    one draw per sample; zeros fill the border. `x` is `(B, C, H, W)`.
    """
    b, _, h, w = x.shape
    angle = torch.deg2rad(_uniform(b, -degrees, degrees, x))  # (B,)
    scale = _uniform(b, 1 - zoom, 1 + zoom, x)  # (B,)
    # grid_sample's coordinates span [-1, 1] over each axis: a shift of f·width is 2f there.
    tx, ty = 2 * _uniform(b, -shift_x, shift_x, x), 2 * _uniform(b, -shift_y, shift_y, x)
    fx, fy = _signs(b, flip_x, x), _signs(b, flip_y, x)  # (B,) of ±1
    # theta maps output to input coordinates: the inverse of flip ∘ shift ∘ scale ∘ rotate, with
    # the rotation done in pixels (the aspect ratio h/w converts between the axes' units).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            cos * fx,
            sin * (h / w) * fy,
            -(cos * tx + sin * (h / w) * ty),
            -sin * (w / h) * fx,
            cos * fy,
            -(-sin * (w / h) * tx + cos * ty),
        ],
        dim=1,
    ).view(b, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signs(n: int, random: bool, like: torch.Tensor) -> torch.Tensor:
    """±1 with a fair coin per sample when `random`, else +1."""
    if not random:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    return torch.randint(0, 2, (n,), device=like.device).to(like.dtype) * 2 - 1


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    if low == high:
        return torch.full((n,), low, device=like.device, dtype=like.dtype)
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)
