"""Initialization: zeros, a constant, Gaussian (std 0.01), uniform, Xavier and Kaiming, under
full-batch SGD at lr 0.3. Zero-initialized hidden weights receive zero gradients and never move;
a constant makes every hidden unit the same, and they stay the same."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import QUICK, course_config, loss_table
from regzoo.studies.experiments._plots import boundaries_and_curves, color, epoch_axis
from regzoo.studies.experiments._probes import BoundaryProbe, WeightProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting, TrialRecord

SETTINGS = [
    Setting("zeros", {"model.init": "zeros"}),
    Setting("constant 0.1", {"model.init": "constant", "model.init_value": 0.1}),
    Setting("normal std 0.01", {"model.init": "normal", "model.init_std": 0.01}),
    Setting("uniform ±0.05", {"model.init": "uniform", "model.init_range": 0.05}),
    Setting("xavier", {"model.init": "xavier"}),
    Setting("kaiming", {"model.init": "kaiming"}),
]
WEIGHT_COLUMNS = (
    "hidden_max_abs",
    "hidden_moved",
    "hidden_distinct_units",
    "output_moved",
)


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe(), WeightProbe()]


def table(run: ExperimentRun) -> list[Row]:
    def weights(label: str) -> dict[str, Any]:
        attrs = run.one(label).attrs
        return {key: attrs[key] for key in WEIGHT_COLUMNS}

    return loss_table("init", weights)(run)


def moved_panel(ax: Axes, records: list[TrialRecord]) -> None:
    """How far the hidden layer's weights are from their initial values, per epoch."""
    for i, rec in enumerate(records):
        moved = rec.arrays("weights.npz")["moved"][:, 0]  # (epochs + 1,) first layer
        ax.plot(np.arange(len(moved)), moved, color=color(i), lw=1.1)
    ax.set_yscale("symlog", linthresh=1e-3)
    epoch_axis(ax, "hidden weights: ‖W₁ − W₁(0)‖")


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    return boundaries_and_curves(run, extra=[moved_panel])


EXPERIMENT = Experiment(
    name="initialization",
    title="Initialization: SGD lr 0.3 (full batch) on glyph, FNN 32 ReLU",
    factor="init",
    base=course_config(optimizer="sgd", lr=0.3),
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick=QUICK,
    quick_labels=("zeros", "constant 0.1", "kaiming"),
    probes=probes,
)
