"""An ablation as a forest plot: what switching off each regularizer cost, with its 95% interval.

    figure = forest_plot(read_ablation(study, companion))
    figure.savefig("ablation.png")

Drawn on a `matplotlib.figure.Figure` with an Agg canvas: no pyplot state, no window, so it
works wherever a report is written (a server without a display included).
"""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from regzoo.studies.verdicts.ablate import Ablation
from regzoo.studies.verdicts.stats import Paired
from regzoo.studies.verdicts.tables import METRIC

PP = 100.0  # accuracies are fractions; effects read best in percentage points
ROW_INCHES = 0.45


def forest_plot(ablation: Ablation, metric: str = METRIC) -> Figure:
    """One row per variant (top to bottom in the ablation's order): the effect on `metric`
    (full minus variant, in percentage points) as a point with its 95% interval as a bar.

    Raises:
        ValueError: no variant has a complete run paired with the full configuration's.
    """
    effects = [ablation.effect(row, metric) for row in ablation.variants]
    if not any(math.isfinite(e.mean) for e in effects):
        raise ValueError("no variant has a complete run to compare with the full configuration")
    fig = Figure(figsize=(9, 1.6 + ROW_INCHES * len(effects)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = list(range(len(effects)))[::-1]  # the first variant on top
    for y, effect in zip(ys, effects, strict=True):
        if not math.isfinite(effect.mean):
            continue  # no paired run: the row stays, labelled, without a point
        ax.errorbar(
            effect.mean * PP,
            y,
            xerr=_bar(effect),
            fmt="o",
            color=_colour(effect),
            capsize=4,
        )
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(ys, [f"{row.variant} ({row.setting})" for row in ablation.variants])
    ax.set_ylim(-0.7, len(effects) - 0.3)
    right = ax.secondary_yaxis("right")
    right.set_yticks(ys, [_p(effect) for effect in effects])
    right.tick_params(length=0)
    right.set_ylabel("p (paired t-test)")
    ax.set_xlabel(f"effect on {metric} (full - variant), percentage points; > 0: it helped")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        f"{ablation.study}: trial {ablation.trial} without each regularizer\n"
        f"{len(ablation.seeds)} seeds each; point: mean effect, bar: its 95% CI"
    )
    return fig


def _bar(effect: Paired) -> list[list[float]] | None:
    """The interval as errorbar's distances below and above the point (None: undefined)."""
    if not math.isfinite(effect.low):
        return None
    return [[(effect.mean - effect.low) * PP], [(effect.high - effect.mean) * PP]]


def _colour(effect: Paired) -> str:
    if effect.above_zero():
        return "tab:green"  # the regularizer helped beyond seed noise
    if effect.below_zero():
        return "tab:red"
    return "tab:gray"


def _p(effect: Paired) -> str:
    return "-" if math.isnan(effect.pvalue) else f"{effect.pvalue:.2g}"
