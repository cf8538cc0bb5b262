"""Input normalization on features of very different scales (the `wine` data: proline in the
hundreds to thousands beside ratios below one): none, min-max, standardization and PCA
whitening, each fitted on the training split, under full-batch SGD at lr 0.01 (the lecture's
smallest SGD rate). Reports the epochs each needs to reach a training-loss threshold and the
gradient norms."""

from __future__ import annotations

import lightning as L
import numpy as np
from matplotlib.figure import Figure

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import FULL_BATCH, QUICK, course_config
from regzoo.studies.experiments._plots import PANEL, color, curves, epoch_axis
from regzoo.studies.experiments._probes import GradNormProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting

THRESHOLD = 0.2  # training loss the table counts epochs to
METHODS = ("none", "minmax", "standard", "pca")


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [GradNormProbe()]


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for label in run.labels:
        rec = run.one(label)
        rows.append(
            {
                "normalize": label,
                f"epochs_to_train_loss_{THRESHOLD:g}": rec.curves.first_below(
                    "train/loss", THRESHOLD
                ),
                **rec.losses(),
                "grad_norm_first": rec.attrs.get("grad_norm_first"),
                "grad_norm_median": rec.attrs.get("grad_norm_median"),
                "diverged_at": rec.attrs.get("diverged_at"),
                "test_acc": rec.attrs.get("test/acc"),
            }
        )
    return rows


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    records = [run.one(label) for label in run.labels]
    fig = Figure(figsize=(PANEL * 4.2, PANEL * 1.4), layout="constrained")
    train, val, grads = fig.subplots(1, 3)
    curves(train, records, "train/loss", title="training loss")
    train.axhline(THRESHOLD, color="k", ls=":", lw=0.8)
    curves(val, records, "val/loss", title="validation loss")
    for i, rec in enumerate(records):
        norms = np.load(rec.file("grad_norms.npy"))
        grads.plot(np.arange(1, len(norms) + 1), norms, color=color(i), lw=1.1, label=rec.label)
    grads.set_yscale("log")
    epoch_axis(grads, "gradient norm (per epoch)", legend=True)
    fig.suptitle(EXPERIMENT.title, fontsize=10)
    return fig


WINE = {"name": "wine", "batch_size": FULL_BATCH}

EXPERIMENT = Experiment(
    name="normalization",
    title="Input normalization on wine (13 features, scales 0.1 to 1000s): SGD lr 0.01",
    factor="normalize",
    base=course_config(optimizer="sgd", lr=0.01, data=WINE),
    settings=[Setting(m, {"data.normalize": m}) for m in METHODS],
    table=table,
    figure=figure,
    quick=QUICK,
    quick_labels=("none", "standard"),
    probes=probes,
)
