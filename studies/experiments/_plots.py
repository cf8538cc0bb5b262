"""Plotting helpers shared by the experiments: decision boundaries side by side and learning
curves, drawn on `matplotlib.figure.Figure` objects (no pyplot state, no window)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from PIL import Image

from regzoo.studies.experiments._spec import ExperimentRun, TrialRecord

PANEL = 2.3  # inches per small panel: figures stay small PNGs
DPI = 80
PALETTE = 256  # colours kept in a saved PNG: a third of the bytes, no visible change
CLASS_COLORS = ("#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214")


def save_png(fig: Figure, path: Path) -> None:
    """Save `fig` as a palette PNG, small enough to commit beside the README."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=PALETTE).save(path, optimize=True)


def color(i: int) -> str:
    return f"C{i % 10}"


def boundary(ax: Axes, arrays: dict[str, np.ndarray], *, which: str = "p_final") -> None:
    """Shade the predicted class over the grid (the boundary drawn at p = 0.5 for two classes),
    with training points filled and validation points as crosses."""
    gx, gy, p = arrays["gx"], arrays["gy"], arrays[which]
    if p.shape[-1] == 2:
        ax.contourf(gx, gy, p[..., 1], levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(gx, gy, p[..., 1], levels=[0.5], colors="k", linewidths=1.0)
    else:
        cmap = ListedColormap(CLASS_COLORS[: p.shape[-1]])
        ax.pcolormesh(gx, gy, p.argmax(-1), cmap=cmap, alpha=0.35, shading="auto")
    for split, marker, size in (("train", "o", 9), ("val", "x", 22)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        colors = [CLASS_COLORS[int(c) % len(CLASS_COLORS)] for c in y]
        edge = "k" if marker == "o" else None
        ax.scatter(
            x[:, 0], x[:, 1], c=colors, s=size, marker=marker, linewidths=0.4, edgecolors=edge
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    ax.set_aspect("equal")


def curves(
    ax: Axes,
    records: Sequence[TrialRecord],
    metric: str,
    *,
    title: str,
    log: bool = True,
    labels: Sequence[str] | None = None,
) -> None:
    """One line per trial of `metric` against the epoch, coloured by setting."""
    for i, rec in enumerate(records):
        label = labels[i] if labels is not None else rec.label
        values = rec.curves[metric]
        ax.plot(rec.curves.epoch, values, color=color(i), lw=1.1, label=label)
    if log:
        ax.set_yscale("log")
    epoch_axis(ax, title)


def train_eval_stars(ax: Axes, records: Sequence[TrialRecord]) -> None:
    """Each trial's training split evaluated as validation is, from its kept checkpoint (the
    epoch of its lowest validation loss): `train/loss` averages its batches with dropout on."""
    for i, rec in enumerate(records):
        value = rec.attrs.get("train_eval/loss")
        if value is not None:
            epoch = rec.curves.best_epoch("val/loss")
            ax.plot(
                [epoch], [value], marker="*", markersize=10, color=color(i), ls="none",
                markeredgecolor="k", markeredgewidth=0.6, zorder=5,
            )  # fmt: skip


def epoch_axis(ax: Axes, title: str, *, grid: bool = True, legend: bool = False) -> None:
    """The look every per-epoch panel shares: small title, "epoch" on x, light grid."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    if grid:
        ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


Panel = Callable[[Axes, list[TrialRecord]], None]


def boundaries_and_curves(
    run: ExperimentRun,
    *,
    which: str | Sequence[str] = "p_final",
    captions: Sequence[str] | None = None,
    extra: Sequence[Panel] = (),
    log: bool = True,
) -> Figure:
    """The standard figure of a 2-D experiment: one decision boundary per setting on top, the
    generalization gap of its kept epoch (the lowest validation loss) in the title; the
    training and validation loss curves of every setting (and any `extra` panels) below, with a
    star at the kept epoch for the training split evaluated as validation is
    (`train_eval/loss`: no dropout, no augmentation).

    `which` picks the boundary drawn (`p_final`: the last epoch, `p_best`: the epoch with the
    lowest validation loss), for all settings or per setting.
    """
    records = [run.one(label) for label in run.labels]
    n, m = len(records), 2 + len(extra)
    fig = Figure(figsize=(max(PANEL * n, PANEL * 1.5 * m), PANEL * 2.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.0, 1.1), squeeze=False)[:, 0]
    picks = [which] * n if isinstance(which, str) else list(which)
    for i, (ax, rec) in enumerate(zip(top.subplots(1, n, squeeze=False)[0], records, strict=True)):
        boundary(ax, rec.arrays("boundary.npz"), which=picks[i])
        title = captions[i] if captions else rec.label
        gap = rec.gaps()["best_gap_acc"]
        if not np.isnan(gap):  # the kept epoch's, which need not be the boundary's
            title += f"\ngap {gap:+.3f} at epoch {rec.curves.best_epoch('val/loss')}"
        ax.set_title(title, fontsize=8, color=color(i))
    axes = bottom.subplots(1, m, squeeze=False)[0]
    curves(axes[0], records, "train/loss", title="training loss (★ train_eval)", log=log)
    train_eval_stars(axes[0], records)
    curves(axes[1], records, "val/loss", title="validation loss", log=log)
    axes[1].sharey(axes[0])
    axes[1].legend(fontsize=7, loc="best")
    for ax, panel in zip(axes[2:], extra, strict=True):
        panel(ax, records)
    fig.suptitle(run.experiment.title, fontsize=10)
    return fig
