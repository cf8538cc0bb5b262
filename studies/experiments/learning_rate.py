"""SGD with learning rates 0.3, 0.05 and 0.01 for 1000 epochs, and 0.01 for 5000 epochs: a small
rate needs proportionally more epochs to reach the same fit."""

from __future__ import annotations

from regzoo.studies.experiments._course import (
    EPOCHS,
    QUICK,
    QUICK_EPOCHS,
    boundary_figure,
    boundary_probe,
    course_config,
    loss_table,
)
from regzoo.studies.experiments._spec import Experiment, Setting

LONG = 5  # the last setting trains this many times longer

SETTINGS = [
    Setting("lr=0.3", {"model.lr": 0.3}),
    Setting("lr=0.05", {"model.lr": 0.05}),
    Setting("lr=0.01", {"model.lr": 0.01}),
    Setting(
        f"lr=0.01, {LONG * EPOCHS} epochs",
        {"model.lr": 0.01, "trainer.max_epochs": LONG * EPOCHS},
        quick={"trainer.max_epochs": LONG * QUICK_EPOCHS},
    ),
]

EXPERIMENT = Experiment(
    name="learning_rate",
    title="Learning rate: SGD (full batch) on glyph, FNN 32 ReLU",
    factor="lr",
    base=course_config(optimizer="sgd", lr=0.3),
    settings=SETTINGS,
    table=loss_table("lr"),
    figure=boundary_figure,
    quick=QUICK,
    quick_labels=("lr=0.3", "lr=0.01", SETTINGS[-1].label),
    probes=boundary_probe,
)
