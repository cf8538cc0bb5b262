"""Pictures of augmentation: original training samples next to augmented draws of them.

Images are a grid (the top row original, the rows below augmented draws), 1-D signals small
line plots (original in black, draws in colour), point sets a scatter before and after.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from regzoo.datamodules._augment import data_kind
from regzoo.datamodules.base import ArrayDataModule

# Shown when the user sets no augment.* option: a moderate dose of what fits each kind of data.
DEMO_AUGMENT = {
    "image": {"rotation": 15, "zoom": 0.1, "shift": 0.1, "noise": 0.05},
    "signal": {"zoom": 0.1, "shift": 0.1, "noise": 0.1},
    "points": {"noise": 0.05},
}


def write_preview(dm: ArrayDataModule, out: Path, *, samples: int = 8, draws: int = 3) -> Path:
    """Draw `samples` training inputs and `draws` augmentations of each to the PNG `out`."""
    raw = dm.raw("train")
    assert dm.raw_shape is not None
    kind = data_kind(dm.raw_shape)
    with torch.random.fork_rng():  # the same picture for the same seed, global state untouched
        torch.manual_seed(dm.seed)
        if kind == "points":
            fig = _points(raw, dm.splits["train"][1], dm.augment_raw(raw))
        else:
            x = raw[:samples]
            augmented = [dm.augment_raw(x) for _ in range(draws)]
            fig = _images(x, augmented) if kind == "image" else _signals(x, augmented)
    options = ", ".join(f"{k}={v}" for k, v in dm.augment.items())
    fig.suptitle(f"{dm.dataset_name}: {options} ({dm.augment_backend})", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _images(x: torch.Tensor, augmented: list[torch.Tensor]) -> Figure:
    rows = [x, *augmented]
    fig, axes = plt.subplots(len(rows), len(x), figsize=(len(x), len(rows) + 0.3), squeeze=False)
    for r, batch in enumerate(rows):
        for c, image in enumerate(batch):
            ax = axes[r, c]
            pixels = image.permute(1, 2, 0).clamp(0, 1).numpy()  # (C, H, W) -> (H, W, C)
            ax.imshow(
                pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray", vmin=0, vmax=1
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=8)
    return fig


def _signals(x: torch.Tensor, augmented: list[torch.Tensor]) -> Figure:
    cols = min(4, len(x))
    rows = -(-len(x) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 1.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(x):
            ax.axis("off")
            continue
        for batch in augmented:
            ax.plot(batch[i, 0].numpy(), lw=0.8, alpha=0.8)
        ax.plot(x[i, 0].numpy(), color="black", lw=1.4)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _points(x: torch.Tensor, y: torch.Tensor, augmented: torch.Tensor) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6), sharex=True, sharey=True)
    for ax, points, title in ((axes[0], x, "original"), (axes[1], augmented, "augmented")):
        ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), c=y.numpy(), s=4, cmap="coolwarm")
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
    return fig
