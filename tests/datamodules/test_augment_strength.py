"""Both backends apply each transform with the configured strength, measured on probe inputs:
a blob's centre of mass for shift, a bar's orientation for rotation, a blob's spread for zoom,
the residual's spread for noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from regzoo.datamodules import ArrayDataModule, Arrays

BACKENDS = ["device", "albumentations"]
SIDE, N = 33, 400
GRID = torch.arange(SIDE, dtype=torch.float32)


class Probe(ArrayDataModule):
    """Copies of one probe input (all class 0, but for a few class-1 copies for the splits)."""

    def __init__(self, sample: np.ndarray, **options: Any) -> None:
        self.sample = sample.astype(np.float32)
        super().__init__(**options)

    def load(self) -> Arrays:
        x = np.repeat(self.sample[None], N, axis=0)
        return Arrays(x=x, y=np.arange(N) % 2)


def augmented(sample: np.ndarray, backend: str, **augment: Any) -> tuple[torch.Tensor, Any]:
    dm = Probe(sample, augment=augment, augment_backend=backend)
    raw = dm.raw("train")
    return dm.augment_raw(raw), dm


def blob(cy: float, cx: float, sigma: float) -> np.ndarray:
    y, x = np.mgrid[:SIDE, :SIDE]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))[None]  # (1, H, W)


def moments(img: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Centre of mass (y, x) and central second moments (yy, xx, xy) of (B, 1, H, W)."""
    w = img[:, 0].clamp(min=0)
    mass = w.sum((1, 2))
    cy = (w.sum(2) * GRID).sum(1) / mass
    cx = (w.sum(1) * GRID).sum(1) / mass
    dy, dx = GRID[None, :, None] - cy[:, None, None], GRID[None, None, :] - cx[:, None, None]
    yy, xx, xy = ((w * m).sum((1, 2)) / mass for m in (dy * dy, dx * dx, dx * dy))
    return cy, cx, yy, xx, xy


def assert_uniform(values: torch.Tensor, limit: float, *, tol: float) -> None:
    """values ~ U[-limit, limit]: extremes near ±limit, mean |value| near limit / 2."""
    assert float(values.abs().max()) == pytest.approx(limit, abs=tol)
    assert float(values.abs().mean()) == pytest.approx(limit / 2, abs=tol)
    assert abs(float(values.mean())) < tol


@pytest.mark.parametrize("backend", BACKENDS)
def test_shift_moves_the_centre_of_mass_by_the_fraction_of_the_width(backend: str) -> None:
    centre = (SIDE - 1) / 2
    out, _ = augmented(blob(centre, centre, 1.5), backend, shift=0.25)
    cy, cx, *_ = moments(out)
    dy, dx = (cy - centre) / SIDE, (cx - centre) / SIDE
    assert_uniform(dx, 0.25, tol=0.02)
    assert_uniform(dy, 0.25, tol=0.02)
    assert abs(float(torch.corrcoef(torch.stack([dx, dy]))[0, 1])) < 0.15  # axes independent


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_turns_a_bar_by_up_to_the_angle(backend: str) -> None:
    bar = np.zeros((1, SIDE, SIDE))
    bar[0, SIDE // 2 - 1 : SIDE // 2 + 2, 6:-6] = 1.0
    out, _ = augmented(bar, backend, rotation=30)
    *_, yy, xx, xy = moments(out)
    angle = torch.rad2deg(0.5 * torch.atan2(2 * xy, xx - yy))
    assert_uniform(angle, 30.0, tol=2.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zoom_scales_a_blob_by_up_to_the_fraction(backend: str) -> None:
    centre = (SIDE - 1) / 2
    _, dm0 = augmented(blob(centre, centre, 3.0), backend, noise=0.0)
    original = moments(dm0.raw("train")[:1])
    out, _ = augmented(blob(centre, centre, 3.0), backend, zoom=0.3)
    *_, yy, xx, _ = moments(out)
    ratio = torch.sqrt((yy + xx) / (original[2] + original[3]))
    assert_uniform(ratio - 1, 0.3, tol=0.03)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_has_the_configured_standard_deviation(backend: str) -> None:
    grey = np.full((1, SIDE, SIDE), 0.5)
    out, _ = augmented(grey, backend, noise=0.1)
    residual = out - 0.5
    assert float(residual.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(residual.mean())) < 0.005


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flip", ["horizontal", "vertical", "both"])
def test_flips_mirror_half_of_the_samples_per_allowed_axis(backend: str, flip: str) -> None:
    corner = blob(8, 8, 1.5)
    out, _ = augmented(corner, backend, flip=flip)
    cy, cx, *_ = moments(out)
    right, low = (cx > SIDE / 2).float(), (cy > SIDE / 2).float()
    assert float(right.mean()) == pytest.approx(0.5 if flip != "vertical" else 0.0, abs=0.08)
    assert float(low.mean()) == pytest.approx(0.5 if flip != "horizontal" else 0.0, abs=0.08)


@pytest.mark.parametrize("backend", BACKENDS)
def test_p_is_the_share_of_augmented_samples(backend: str) -> None:
    grey = np.full((1, SIDE, SIDE), 0.5)
    out, _ = augmented(grey, backend, noise=0.1, p=0.3)
    changed = ((out - 0.5).abs().amax((1, 2, 3)) > 0).float()
    assert float(changed.mean()) == pytest.approx(0.3, abs=0.07)


# ---- 1-D signals ---------------------------------------------------------------------------

LENGTH = 64


def bump(sigma: float) -> np.ndarray:
    t = np.arange(LENGTH)
    return np.exp(-((t - (LENGTH - 1) / 2) ** 2) / (2 * sigma**2))[None]  # (1, L)


def signal_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(LENGTH, dtype=torch.float32)
    w = x[:, 0].clamp(min=0)
    mean = (w * t).sum(1) / w.sum(1)
    return mean, ((w * (t - mean[:, None]) ** 2).sum(1) / w.sum(1)).sqrt()


@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_shift_zoom_and_noise(backend: str) -> None:
    centre = (LENGTH - 1) / 2
    shifted, _ = augmented(bump(2.0), backend, shift=0.2)
    assert_uniform((signal_moments(shifted)[0] - centre) / LENGTH, 0.2, tol=0.02)
    zoomed, dm = augmented(bump(5.0), backend, zoom=0.3)
    spread = signal_moments(zoomed)[1] / signal_moments(dm.raw("train")[:1])[1]
    assert_uniform(spread - 1, 0.3, tol=0.03)
    # A signal is not an image: values far outside [0, 1] must keep their noise unclipped.
    noisy, _ = augmented(np.full((1, LENGTH), -3.0), backend, noise=0.5)
    assert float((noisy + 3.0).std()) == pytest.approx(0.5, rel=0.03)


# ---- point sets ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_jitter_shift_and_zoom(backend: str) -> None:
    # Two points set the bounding box: centre (1, 0), extent (4, 2).
    def points_dm(**augment: Any) -> tuple[torch.Tensor, torch.Tensor]:
        dm = PointProbe(augment=augment, augment_backend=backend)
        raw = dm.raw("train")
        return raw, dm.augment_raw(raw)

    raw, out = points_dm(noise=0.2)
    assert float((out - raw).std()) == pytest.approx(0.2, rel=0.05)
    raw, out = points_dm(shift=0.1)
    move = out - raw
    assert_uniform(move[:, 0], 0.1 * 4, tol=0.04)
    assert_uniform(move[:, 1], 0.1 * 2, tol=0.02)
    raw, out = points_dm(zoom=0.3)
    centre = torch.tensor([1.0, 0.0])
    factor = ((out - centre).norm(dim=1) / (raw - centre).norm(dim=1)).clamp(0, 2)
    assert_uniform(factor - 1, 0.3, tol=0.03)


class PointProbe(ArrayDataModule):
    """Points on a ring around (1, 0) plus two corner points fixing the bounding box."""

    def load(self) -> Arrays:
        angle = np.linspace(0, 2 * np.pi, N)
        ring = np.stack([1 + 0.5 * np.cos(angle), 0.5 * np.sin(angle)], axis=1)
        corners = np.array([[-1.0, -1.0], [3.0, 1.0]])
        x = np.concatenate([np.repeat(corners, 40, axis=0), ring])
        return Arrays(x=x, y=np.arange(len(x)) % 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shift_moves_small_images_by_fractions_of_a_pixel(backend: str) -> None:
    # albumentations 2.0.8 truncates its translation to whole pixels: on an 8×8 digit a 0.1
    # shift (0.8 px) would never move anything.
    dot = np.zeros((1, 8, 8))
    dot[0, 3:5, 3:5] = 1.0
    dm = Probe(dot, augment={"shift": 0.1}, augment_backend=backend)
    out = dm.augment_raw(dm.raw("train"))[:, 0]  # (B, 8, 8)
    cols = torch.arange(8, dtype=torch.float32)
    cx = (out.sum(1) * cols).sum(1) / out.sum((1, 2))
    assert_uniform((cx - 3.5) / 8, 0.1, tol=0.015)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flip_alone_is_an_exact_mirror(backend: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (1, 9, 12))
    out, _ = augmented(image, backend, flip="both")
    original = torch.from_numpy(image).float()
    mirrors = [original, original.flip(-1), original.flip(-2), original.flip(-1).flip(-2)]
    hits = [min(range(4), key=lambda i: float((sample - mirrors[i]).abs().max())) for sample in out]
    for sample, i in zip(out, hits, strict=True):
        torch.testing.assert_close(sample, mirrors[i], atol=1e-5, rtol=0)
    assert set(hits) == {0, 1, 2, 3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_draws_are_independent(backend: str) -> None:
    # p picks the augmented half, the flip coin mirrors half of those: a quarter in all. Draws
    # that shared one sequence (albumentations' per-transform seeding) would give a half.
    out, _ = augmented(blob(8, 8, 1.5), backend, flip="horizontal", p=0.5)
    _, cx, *_ = moments(out)
    assert float((cx > SIDE / 2).float().mean()) == pytest.approx(0.25, abs=0.07)
