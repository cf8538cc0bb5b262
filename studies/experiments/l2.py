"""An L2 penalty of strength 0, 1e-4, 1e-3 and 5e-3 under Adam at lr 0.03 (the lecture's
setting): a stronger penalty keeps the weights small, fits the training set less and draws a
smoother boundary."""

from __future__ import annotations

from typing import Any

import lightning as L

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.experiments._course import QUICK, boundary_figure, course_config, loss_table
from regzoo.studies.experiments._probes import BoundaryProbe, WeightProbe
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting

STRENGTHS = (0.0, 1e-4, 1e-3, 5e-3)


def probes(cfg: StudyConfig) -> list[L.Callback]:
    return [BoundaryProbe(), WeightProbe()]


def table(run: ExperimentRun) -> list[Row]:
    def norm(label: str) -> dict[str, Any]:
        return {"weight_norm": run.one(label).attrs["weight_norm"]}

    return loss_table("l2", norm)(run)


EXPERIMENT = Experiment(
    name="l2",
    title="L2 penalty: Adam lr 0.03, 1000 epochs on glyph, FNN 32 ReLU",
    factor="l2",
    base=course_config(optimizer="adam", lr=0.03),
    settings=[Setting(f"l2={s:g}", {"model.l2": s}) for s in STRENGTHS],
    table=table,
    figure=boundary_figure,
    quick=QUICK,
    quick_labels=("l2=0", "l2=0.005"),
    probes=probes,
)
