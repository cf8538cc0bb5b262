"""XOR: the linear model cannot separate it; one hidden layer of two units without biases can,
as the lecture shows for the truth table (ReLU) and for mirror points (absolute value).

Trained on the `xor` point set (class 1 where exactly one coordinate is positive); the truth
table is checked on its four inputs placed at the quadrants' centres (±0.5, ±0.5)."""

from __future__ import annotations

from typing import Any

import lightning as L

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import FULL_BATCH, QUICK, boundary_figure, course_config
from regzoo.studies.experiments._probes import BoundaryProbe, TruthTableProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting

LR = 0.03
XOR: dict[str, Any] = {"name": "xor", "n_samples": 1000, "noise": 0.0, "batch_size": FULL_BATCH}
TWO_UNITS = {"model.hidden": [2], "model.bias": False}

SETTINGS = [
    Setting("linear", {"model": {"name": "linear", "optimizer": "adam", "lr": LR}}),
    Setting("2 ReLU units", {**TWO_UNITS, "model.activation": "relu"}),
    Setting("2 abs units", {**TWO_UNITS, "model.activation": "abs"}),
]


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe(), TruthTableProbe()]


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for label in run.labels:
        rec = run.one(label)
        losses = rec.losses()
        rows.append(
            {
                "model": label,
                "truth_table_acc": rec.attrs["truth_table_acc"],
                "train_acc": losses["train_acc"],
                "val_acc": losses["val_acc"],
                "test_acc": rec.attrs.get("test/acc"),
                "train_loss": losses["train_loss"],
                "val_loss": losses["val_loss"],
            }
        )
    return rows


EXPERIMENT = Experiment(
    name="xor",
    title="XOR: linear model vs one hidden layer of 2 units (no bias), Adam lr 0.03",
    factor="model",
    base=course_config(optimizer="adam", lr=LR, data=XOR),
    settings=SETTINGS,
    table=table,
    figure=boundary_figure,
    quick=QUICK,
    probes=probes,
)
