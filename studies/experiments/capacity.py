"""Capacity: 1-3 hidden layers of 8-128 ReLU units under Adam at lr 0.03 for 1000 epochs. More
capacity fits the 100 training points more closely; the validation loss shows what that costs."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from regzoo.studies.experiments._course import QUICK, boundary_probe, course_config
from regzoo.studies.experiments._plots import PANEL, boundary
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting

LAYERS = (1, 2, 3)
UNITS = (8, 16, 32, 64, 128)
INPUTS, CLASSES = 2, 2


def label(layers: int, units: int) -> str:
    return f"{layers}x{units}"


def parameters(layers: int, units: int) -> int:
    """Weights and biases of the FNN: `layers` hidden layers of `units`, 2 inputs, 2 classes."""
    widths = [INPUTS, *([units] * layers), CLASSES]
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


SETTINGS = [Setting(label(n, u), {"model.hidden": [u] * n}) for n in LAYERS for u in UNITS]


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for setting in run.experiment.chosen(quick=run.quick):
        layers, units = (int(v) for v in setting.label.split("x"))
        rec = run.one(setting.label)
        row: Row = {"layers": layers, "units": units, "params": parameters(layers, units)}
        rows.append({**row, **rec.losses(), "test_acc": rec.attrs.get("test/acc")})
    return rows


def heatmap(ax: Axes, rows: list[Row], key: str, title: str) -> None:
    layers = sorted({r["layers"] for r in rows})
    units = sorted({r["units"] for r in rows})
    grid = np.full((len(layers), len(units)), np.nan)
    for r in rows:
        grid[layers.index(r["layers"]), units.index(r["units"])] = r[key]
    image = ax.imshow(np.log10(grid), cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6, color="w")
    ax.set_xticks(range(len(units)), [str(u) for u in units], fontsize=7)
    ax.set_yticks(range(len(layers)), [str(n) for n in layers], fontsize=7)
    ax.set_xlabel("units per layer", fontsize=8)
    ax.set_ylabel("hidden layers", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label="log10")


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    layers = sorted({r["layers"] for r in rows})
    units = sorted({r["units"] for r in rows})
    fig = Figure(figsize=(PANEL * 4.6, PANEL * 2.1), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=(1.5, 1.0), squeeze=False)[0]
    axes = left.subplots(len(layers), len(units), squeeze=False)
    for ax in axes.flat:  # a quick run trains only some of the cells
        ax.set_axis_off()
    for r in rows:
        ax = axes[layers.index(r["layers"]), units.index(r["units"])]
        ax.set_axis_on()
        boundary(ax, run.one(label(r["layers"], r["units"])).arrays("boundary.npz"))
        ax.set_title(f"{r['layers']}×{r['units']}", fontsize=7)
    left.suptitle("decision boundaries after training (layers × units)", fontsize=9)
    train_ax, val_ax = right.subplots(2, 1)
    heatmap(train_ax, rows, "train_loss", "final training loss")
    heatmap(val_ax, rows, "val_loss", "final validation loss")
    fig.suptitle(EXPERIMENT.title, fontsize=10)
    return fig


EXPERIMENT = Experiment(
    name="capacity",
    title="Capacity: hidden layers × units, Adam lr 0.03, 1000 epochs on glyph",
    factor="architecture",
    base=course_config(optimizer="adam", lr=0.03),
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick=QUICK,
    quick_labels=(label(1, 8), label(3, 128)),
    probes=boundary_probe,
)
