"""Early stopping on the validation loss, against training all 1000 epochs (Adam lr 0.03). As in
the lecture, the validation set is tiny: 4 points (the lecture: two images per class; the split
here is stratified, so its classes follow the data's class frequencies). The run
with early stopping keeps its best epoch's weights. (No test accuracy in the table: every
study keeps and tests its best-validation-loss checkpoint, so both runs would test the same
epoch's weights.)"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from regzoo.studies.experiments._course import GLYPH, course_config
from regzoo.studies.experiments._plots import boundaries_and_curves, color, epoch_axis
from regzoo.studies.experiments._probes import BoundaryProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting, TrialRecord

PATIENCE = 100
QUICK_PATIENCE = 30
QUICK_EPOCHS = 300  # overfitting has to start before the end, even in a quick run
# 4 of the 800 non-test points: the lecture's two per class, stratified by class frequency.
VAL_FRACTION = 4 / 800
NONE, STOP = "no early stopping", "early stopping"

SETTINGS = [
    Setting(NONE, {"early_stopping": None}),
    Setting(
        STOP,
        {"early_stopping": {"monitor": "val/loss", "patience": PATIENCE}},
        quick={"early_stopping.patience": QUICK_PATIENCE},
    ),
]


def per_class(labels: np.ndarray) -> str:
    """Points of each class, e.g. "3/1" for three background points and one character."""
    return "/".join(str(int((labels == c).sum())) for c in range(2))


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for label in run.labels:
        rec = run.one(label)
        c, best, last = rec.curves, rec.curves.best_epoch("val/loss"), rec.curves.last_epoch
        rows.append(
            {
                "setting": label,
                "stopped_at": last,
                "best_epoch": best,
                "train_loss_at_best": c.at("train/loss", best),
                "val_loss_at_best": c.at("val/loss", best),
                "train_loss_at_end": c.at("train/loss", last),
                "val_loss_at_end": c.at("val/loss", last),
                **rec.gaps(),  # at the kept epoch: the best one
                "val_points_per_class": per_class(rec.arrays("boundary.npz")["y_val"]),
            }
        )
    return rows


def stop_panel(ax: Axes, records: list[TrialRecord], rows: list[Row]) -> None:
    """The full run's validation loss, marked where early stopping kept and stopped."""
    full = records[0]
    ax.plot(full.curves.epoch, full.curves["val/loss"], color=color(0), lw=1.0)
    best, stop = rows[1]["best_epoch"], rows[1]["stopped_at"]
    ax.axvline(best, color=color(1), ls="--", lw=1.0, label=f"best epoch {best}")
    ax.axvline(stop, color=color(1), ls=":", lw=1.0, label=f"stopped at {stop}")
    ax.set_yscale("log")
    epoch_axis(ax, "validation loss, full run", legend=True)


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    captions = [
        f"{rows[0]['setting']}: epoch {rows[0]['stopped_at']}\n"
        f"train {rows[0]['train_loss_at_end']:.3f}, val {rows[0]['val_loss_at_end']:.3f}",
        f"{rows[1]['setting']}: kept epoch {rows[1]['best_epoch']}\n"
        f"train {rows[1]['train_loss_at_best']:.3f}, val {rows[1]['val_loss_at_best']:.3f}",
    ]

    def panel(ax: Axes, records: list[TrialRecord]) -> None:
        stop_panel(ax, records, rows)

    return boundaries_and_curves(run, which=["p_final", "p_best"], captions=captions, extra=[panel])


def _data() -> dict[str, Any]:
    return {**GLYPH, "val_fraction": VAL_FRACTION}


EXPERIMENT = Experiment(
    name="early_stopping",
    title=f"Early stopping (patience {PATIENCE}) on a 4-point validation set: Adam lr 0.03",
    factor="early_stopping",
    base=course_config(optimizer="adam", lr=0.03, data=_data()),
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick={"trainer.max_epochs": QUICK_EPOCHS},
    probes=lambda cfg: [BoundaryProbe()],
)
