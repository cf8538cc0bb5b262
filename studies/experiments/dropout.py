"""Dropout 0, 0.1, 0.5, 0.9 on the hidden layer, Adam at lr 0.03 (the lecture's setting):
stronger dropout fits the training set less and smooths the decision boundary."""

from __future__ import annotations

from regzoo.studies.experiments._course import (
    QUICK,
    boundary_figure,
    boundary_probe,
    course_config,
    loss_table,
)
from regzoo.studies.experiments._spec import Experiment, Setting

RATES = (0.0, 0.1, 0.5, 0.9)

EXPERIMENT = Experiment(
    name="dropout",
    title="Dropout on the hidden layer: FNN 32 ReLU, Adam lr 0.03, 1000 epochs, glyph",
    factor="dropout",
    base=course_config(optimizer="adam", lr=0.03),
    settings=[Setting(f"p={p:g}", {"model.dropout": p}) for p in RATES],
    table=loss_table("dropout"),
    figure=boundary_figure,
    quick=QUICK,
    quick_labels=("p=0", "p=0.9"),
    probes=boundary_probe,
)
