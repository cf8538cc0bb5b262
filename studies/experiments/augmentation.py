"""Data augmentation on a small training set: 100 digits, the CNN, each transform alone and all
together; test accuracy per setting (mean over seeds), and the learning curves."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from regzoo.studies.experiments._plots import PANEL, color, curves
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting

P = 0.5  # each transform is applied to a sample with this probability
TRANSFORMS: dict[str, dict[str, Any]] = {
    "rotation": {"rotation": 15.0},
    "flip": {"flip": "horizontal"},
    "zoom": {"zoom": 0.15},
    "shift": {"shift": 0.15},
    "noise": {"noise": 0.1},
}
ALL = {k: v for t in TRANSFORMS.values() for k, v in t.items()}

SETTINGS = [
    Setting("none", {"data.augment": None}),
    *(Setting(name, {"data.augment": {**t, "p": P}}) for name, t in TRANSFORMS.items()),
    Setting("all", {"data.augment": {**ALL, "p": P}}),
]


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for label in run.labels:
        recs = run.of(label)
        acc = np.array([r.attrs["test/acc"] for r in recs])
        losses = [r.losses() for r in recs]
        rows.append(
            {
                "augmentation": label,
                "test_acc": float(acc.mean()),
                "test_acc_std": float(acc.std()),
                "seeds": len(recs),
                "train_loss": float(np.mean([x["train_loss"] for x in losses])),
                "val_loss": float(np.mean([x["val_loss"] for x in losses])),
                "best_val_loss": float(np.mean([x["best_val_loss"] for x in losses])),
                "best_gap_acc": float(np.mean([x["best_gap_acc"] for x in losses])),
                "best_gap_loss": float(np.mean([x["best_gap_loss"] for x in losses])),
            }
        )
    return rows


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    fig = Figure(figsize=(PANEL * 4.2, PANEL * 1.5), layout="constrained")
    bars, train, val = fig.subplots(1, 3, width_ratios=(1.3, 1, 1))
    x = np.arange(len(rows))
    means = [r["test_acc"] for r in rows]
    stds = [r["test_acc_std"] for r in rows]
    bars.bar(x, means, yerr=stds, color=[color(i) for i in range(len(rows))])
    for i, label in enumerate(run.labels):
        accs = [r.attrs["test/acc"] for r in run.of(label)]
        bars.scatter([i] * len(accs), accs, color="k", s=6, zorder=3)
    bars.set_xticks(x, run.labels, rotation=45, fontsize=7)
    low = min(min(r.attrs["test/acc"] for r in run.records), min(means))
    bars.set_ylim(max(0.0, low - 0.05), 1.0)
    bars.set_title("test accuracy (mean ± std over seeds)", fontsize=9)
    bars.tick_params(labelsize=7)
    first = [run.of(label)[0] for label in run.labels]
    curves(train, first, "train/loss", title="training loss (first seed)")
    curves(val, first, "val/loss", title="validation loss (first seed)")
    val.legend(fontsize=6)
    fig.suptitle(EXPERIMENT.title, fontsize=10)
    return fig


EXPERIMENT = Experiment(
    name="augmentation",
    title="Augmentation: CNN on 100 digits, each transform alone (p=0.5) and all together",
    factor="augmentation",
    base={
        "model": {
            "name": "cnn",
            "channels": [16, 32],
            "hidden": [64],
            "optimizer": "adam",
            "lr": 3.0e-3,
        },
        "data": {"name": "digits", "train_size": 100, "batch_size": 25},
        "trainer": {"max_epochs": 150},
        "objective": {"metric": "val/acc", "direction": "maximize"},
        "early_stopping": None,
        "pruner": {"name": "none"},
        "sampler": {"name": "grid"},
    },
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick={"trainer.max_epochs": 25, "data.train_size": 50},
    quick_labels=("none", "all"),
    seeds=(0, 1, 2),
)
