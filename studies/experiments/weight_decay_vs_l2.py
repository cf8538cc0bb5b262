"""The same strength λ as an L2 penalty and as decoupled weight decay, under SGD and under Adam.

Under SGD the two are one update, θ ← θ − η(∇L + λθ), so the parameter trajectories agree to
float rounding; under Adam the penalty's gradient is rescaled by the second-moment estimate and
the decay is not, so the trajectories part. The table gives the distance between the final
parameters of each pair."""

from __future__ import annotations

import lightning as L
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import QUICK, course_config
from regzoo.studies.experiments._plots import boundaries_and_curves, epoch_axis
from regzoo.studies.experiments._probes import BoundaryProbe, TrajectoryProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting, TrialRecord

STRENGTH = 5e-3
OPTIMIZERS = {"sgd": {"model.optimizer": "sgd", "model.lr": 0.3}, "adam": {}}
PENALTIES = {"l2": "model.l2", "decay": "model.weight_decay"}

SETTINGS = [
    Setting(f"{opt} + {pen}", {**keys, PENALTIES[pen]: STRENGTH})
    for opt, keys in OPTIMIZERS.items()
    for pen in PENALTIES
]


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe(), TrajectoryProbe()]


def distances(run: ExperimentRun, optimizer: str) -> np.ndarray:
    """‖θ_l2(t) − θ_decay(t)‖ / ‖θ_l2(t)‖ at every epoch t (0: the shared initial point)."""
    a = np.load(run.one(f"{optimizer} + l2").file("trajectory.npy"))  # (epochs + 1, P)
    b = np.load(run.one(f"{optimizer} + decay").file("trajectory.npy"))
    steps = min(len(a), len(b))
    diff = np.linalg.norm(a[:steps] - b[:steps], axis=1)
    return diff / np.maximum(np.linalg.norm(a[:steps], axis=1), 1e-12)


def table(run: ExperimentRun) -> list[Row]:
    rows = []
    for opt in OPTIMIZERS:
        a = np.load(run.one(f"{opt} + l2").file("trajectory.npy"))
        b = np.load(run.one(f"{opt} + decay").file("trajectory.npy"))
        relative = distances(run, opt)
        for pen in PENALTIES:
            rec = run.one(f"{opt} + {pen}")
            row: Row = {"optimizer": opt, "penalty": pen, "strength": STRENGTH}
            row.update(rec.losses())
            row["param_norm"] = float(np.linalg.norm((a if pen == "l2" else b)[-1]))
            row["final_distance"] = float(np.linalg.norm(a[-1] - b[-1]))
            row["max_relative_distance"] = float(relative.max())
            rows.append(row)
    return rows


def distance_panel(ax: Axes, run: ExperimentRun) -> None:
    for i, opt in enumerate(OPTIMIZERS):
        relative = distances(run, opt)[1:]
        ax.plot(np.arange(1, len(relative) + 1), relative, color=f"C{2 * i}", label=opt)
    ax.set_yscale("log")
    epoch_axis(ax, "‖θ_L2 − θ_decay‖ / ‖θ_L2‖", legend=True)


def figure(run: ExperimentRun, rows: list[Row]) -> Figure:
    def panel(ax: Axes, records: list[TrialRecord]) -> None:
        distance_panel(ax, run)

    return boundaries_and_curves(run, extra=[panel])


EXPERIMENT = Experiment(
    name="weight_decay_vs_l2",
    title=f"L2 penalty vs decoupled weight decay, λ={STRENGTH:g}: SGD lr 0.3 and Adam lr 0.03",
    factor="regularization",
    base=course_config(optimizer="adam", lr=0.03),
    settings=SETTINGS,
    table=table,
    figure=figure,
    quick=QUICK,
    probes=probes,
)
