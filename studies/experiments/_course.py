"""The lecture's common setting, shared by most experiments: the `glyph` character-vs-background
task, an FNN with one hidden layer of 32 ReLU units, 1000 full-batch epochs, and a training set
small enough (100 points) that overfitting shows.

Also the table and figure most of those experiments use: one row of losses per setting, the
decision boundaries side by side above the training and validation loss curves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from matplotlib.figure import Figure

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._plots import boundaries_and_curves
from regzoo.studies.experiments._probes import BoundaryProbe
from regzoo.studies.experiments._spec import ExperimentRun, Row

EPOCHS = 1000
QUICK_EPOCHS = 100
TRAIN_SIZE = 100
# One batch holds the whole training set: an epoch is one gradient step, as in the lecture's
# plots, and 1000 epochs take seconds.
FULL_BATCH = 1000
GLYPH: dict[str, Any] = {
    "name": "glyph",
    "character": "A",
    "n_samples": 1000,  # 200 test, 160 validation, 640 of which 100 are kept for training
    "train_size": TRAIN_SIZE,
    "batch_size": FULL_BATCH,
}
QUICK: dict[str, Any] = {"trainer.max_epochs": QUICK_EPOCHS}


def course_config(
    *, optimizer: str, lr: float, data: dict[str, Any] | None = None, **model: Any
) -> dict[str, Any]:
    """The study config of the lecture's setting, with one optimizer and learning rate."""
    return {
        "model": {
            "name": "fnn",
            "hidden": [32],
            "activation": "relu",
            "optimizer": optimizer,
            "lr": lr,
            **model,
        },
        "data": dict(data or GLYPH),
        "trainer": {"max_epochs": EPOCHS},
        "objective": {"metric": "val/loss", "direction": "minimize"},
        "early_stopping": None,
        "pruner": {"name": "none"},
        "sampler": {"name": "grid"},
    }


def boundary_probe(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe()]


def loss_table(factor: str, extra: Callable[[str], dict[str, Any]] | None = None) -> Any:
    """A table function: per setting, `factor` = its label, the losses, and `extra(label)`."""

    def table(run: ExperimentRun) -> list[Row]:
        rows = []
        for label in run.labels:
            rec = run.one(label)
            row: Row = {factor: label, **rec.losses()}
            if "test/acc" in rec.attrs:
                row["test_acc"] = rec.attrs["test/acc"]
            rows.append({**row, **(extra(label) if extra else {})})
        return rows

    return table


def boundary_figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    return boundaries_and_curves(run)
