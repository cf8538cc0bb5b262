"""SGD, momentum (0.9), RMSProp and Adam at one learning rate (0.03, the lecture's Adam rate);
and SGD with the lecture's piecewise schedule 0.3 (epochs 1-500), 0.05 (501-900), 0.01
(901-1000), to set against Adam at 0.03."""

from __future__ import annotations

import lightning as L
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import (
    EPOCHS,
    QUICK,
    QUICK_EPOCHS,
    course_config,
    loss_table,
)
from regzoo.studies.experiments._plots import boundaries_and_curves, color, epoch_axis
from regzoo.studies.experiments._probes import BoundaryProbe, LrProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting, TrialRecord

LR = 0.03
THRESHOLD = 0.1  # training loss the table counts epochs to
PIECEWISE_LRS = [0.3, 0.05, 0.01]


def milestones(epochs: int) -> list[int]:
    """The lecture's switch points, 500 and 900 of 1000 epochs, for any length."""
    return [epochs // 2, epochs * 9 // 10]


SETTINGS = [
    Setting("sgd", {"model.optimizer": "sgd"}),
    Setting("momentum", {"model.optimizer": "momentum", "model.momentum": 0.9}),
    Setting("rmsprop", {"model.optimizer": "rmsprop"}),
    Setting("adam", {"model.optimizer": "adam"}),
    Setting(
        "sgd piecewise 0.3/0.05/0.01",
        {
            "model.optimizer": "sgd",
            "model.lr": PIECEWISE_LRS[0],
            "model.scheduler": "piecewise",
            "model.milestones": milestones(EPOCHS),
            "model.lr_values": PIECEWISE_LRS,
        },
        quick={"model.milestones": milestones(QUICK_EPOCHS)},
    ),
]


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe(), LrProbe()]


def table(run: ExperimentRun) -> list[Row]:
    rows = loss_table("optimizer")(run)
    for row in rows:
        rec = run.one(row["optimizer"])
        lr = np.load(rec.file("lr.npy"))
        row["lr_first"], row["lr_last"] = float(lr[0]), float(lr[-1])
        row[f"epochs_to_train_loss_{THRESHOLD:g}"] = rec.curves.first_below("train/loss", THRESHOLD)
    return rows


def lr_panel(ax: Axes, records: list[TrialRecord]) -> None:
    for i, rec in enumerate(records):
        lr = np.load(rec.file("lr.npy"))
        ax.plot(np.arange(1, len(lr) + 1), lr, color=color(i), lw=1.1)
    ax.set_yscale("log")
    epoch_axis(ax, "learning rate")


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    return boundaries_and_curves(run, extra=[lr_panel])


EXPERIMENT = Experiment(
    name="optimizers",
    title=f"Optimizers at lr {LR:g}, and SGD with a piecewise schedule: glyph, FNN 32 ReLU",
    factor="optimizer",
    base=course_config(optimizer="sgd", lr=LR),
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick=QUICK,
    quick_labels=("sgd", "adam", SETTINGS[-1].label),
    probes=probes,
)
