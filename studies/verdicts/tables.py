"""A confirmation's and an ablation's tables, as rows of plain values: the console, the report
(markdown and HTML) and the W&B study run all show these rows."""

from __future__ import annotations

import math
from typing import Any

from regzoo.studies.verdicts.ablate import ALL_OFF, Ablation, Effect
from regzoo.studies.verdicts.confirm import Confirmation
from regzoo.studies.verdicts.stats import PAIRED_TEST, Paired, Summary

Row = dict[str, Any]
METRIC = "test/acc"
# Shown next to the test accuracy, each with its interval: how much the configuration overfits
# (`gap/acc`: train_eval/acc − val/acc, at the kept epoch) and how calibrated it is.
OVERFITTING = ("gap/acc", "test/ece")


def confirm_rows(c: Confirmation, metric: str = METRIC) -> list[Row]:
    """One row per configuration, best (by the study) first."""
    rows = []
    for cand in c.candidates:
        s = cand.summary(metric, c.seeds)
        loss = cand.summary("test/loss", c.seeds)
        rows.append(
            {
                "configuration": cand.label,
                "study value": cand.value,
                "runs": f"{s.n}/{len(c.seeds)}",
                f"{metric} mean": s.mean,
                f"{metric} sd": s.std,
                "95% CI low": s.low,
                "95% CI high": s.high,
                "test/loss mean": loss.mean,
                **{f"{m} [95% CI]": interval(cand.summary(m, c.seeds)) for m in OVERFITTING},
                "parameters": ", ".join(f"{_leaf(k)}={_short(v)}" for k, v in cand.params.items()),
            }
        )
    return rows


def ablation_rows(a: Ablation, metric: str = METRIC) -> list[Row]:
    """The full configuration, then one row per variant with its effect (full minus variant)."""
    rows = []
    for row in [a.full, *a.variants]:
        s = row.summary(metric, a.seeds)
        effect = None if row is a.full else a.effect(row, metric)
        rows.append(
            {
                "variant": row.variant,
                "setting": row.setting,
                "runs": f"{s.n}/{len(a.seeds)}",
                f"{metric} mean": s.mean,
                f"{metric} sd": s.std,
                "effect": effect.mean if effect else math.nan,
                "effect 95% CI low": effect.low if effect else math.nan,
                "effect 95% CI high": effect.high if effect else math.nan,
                "p": effect.pvalue if effect else math.nan,
                **{f"{m} mean": row.summary(m, a.seeds).mean for m in OVERFITTING},
                **{
                    f"{m} effect [95% CI]": signed(a.effect(row, m)) if effect else "-"
                    for m in OVERFITTING
                },
            }
        )
    return rows


def bought_line(a: Ablation, row: Effect) -> str:
    """What one regularizer (a variant's row) bought, in words: the effect on test accuracy,
    the gap and the ECE, each full minus variant with its 95% interval. A regularizer that
    works raises the accuracy and lowers the gap; one that only changes confidence moves the
    ECE alone."""
    what = row.variant.removeprefix("no ") if row.variant != ALL_OFF else "all of them together"
    setting = f" ({row.setting})" if row.setting and row.variant != ALL_OFF else ""
    effects = ", ".join(f"{signed(a.effect(row, m))} {m}" for m in (METRIC, *OVERFITTING))
    return f"{what}{setting} bought {effects}"


def signed(d: Paired, digits: int = 4) -> str:
    """A paired difference as `+mean [+low, +high]`, or `-` with no completed pair."""
    return interval(d, digits=digits, sign=True)


def interval(
    s: Summary | Paired, scale: float = 1.0, digits: int = 4, *, sign: bool = False
) -> str:
    """`mean [low, high]` (each signed with `sign`), or the mean alone where the interval is
    undefined, or `-` with no value."""
    if math.isnan(s.mean):
        return "-"
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(s.mean * scale, spec)
    if math.isnan(s.low):
        return text
    return f"{text} [{format(s.low * scale, spec)}, {format(s.high * scale, spec)}]"


def comparison_line(c: Confirmation, metric: str = METRIC) -> str | None:
    """The first configuration against the second, in words."""
    d = c.comparison(metric)
    if d is None:
        return None
    first, second = c.candidates[0].label, c.candidates[1].label
    if d.n < 2:
        return f"{first} vs {second}: fewer than 2 seeds completed for both; no test"
    if d.above_zero():
        verdict = f"{first} beats {second}"
    elif d.below_zero():
        verdict = f"{second} beats {first}"
    else:
        verdict = "no difference beyond seed noise"
    p = "p undefined (the same on every seed)" if math.isnan(d.pvalue) else (f"p={d.pvalue:.3g}")
    return (
        f"{first} - {second}: {metric} {d.mean:+.4f}, 95% CI [{d.low:+.4f}, {d.high:+.4f}], "
        f"{PAIRED_TEST} over {d.n} seeds, {p}: {verdict}"
    )


def fmt_cell(value: Any) -> str:
    """A table cell: floats to 4 decimals, nan as a dash."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _leaf(key: str) -> str:
    return key.rpartition(".")[2]
