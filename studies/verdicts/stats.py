"""The statistics of a verdict, all from scipy: a mean's 95% interval over seeds, and a paired
comparison of two configurations trained with the same seeds.

    summarize([0.986, 0.989, 0.983, 0.992, 0.986])      # mean, sd, t interval
    paired(first, second)                              # mean difference, its interval, p-value

Seeds are few (5 by default), so intervals are Student-t ones, and two configurations are
compared by a paired t-test on the per-seed differences (each seed's initialization and batches
are the same for both, so the pairing removes that share of the noise). A Wilcoxon signed-rank
test cannot reach p < 0.05 with 5 pairs (its smallest two-sided p is 0.0625).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
PAIRED_TEST = "paired t-test"


@dataclass(frozen=True)
class Summary:
    """Values over seeds: their count, mean, standard deviation (n - 1) and 95% t interval."""

    n: int
    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """`a - b` over the seeds both have: mean difference, its 95% interval, the test's p-value."""

    n: int
    mean: float
    low: float
    high: float
    pvalue: float
    test: str = PAIRED_TEST

    def above_zero(self) -> bool:
        """Whether the whole interval is above 0: `a` is larger beyond seed noise."""
        return self.low > 0

    def below_zero(self) -> bool:
        return self.high < 0


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sd and the 95% t interval of the mean (nan where fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        mean = float(x.mean()) if len(x) else math.nan
        return Summary(len(x), mean, math.nan, math.nan, math.nan)
    with _quiet():
        interval = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return Summary(
        len(x), float(x.mean()), float(x.std(ddof=1)), float(interval.low), float(interval.high)
    )


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """The paired t-test of `a` against `b` (same seeds, same order)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired values need the same seeds: {len(x)} against {len(y)}")
    if len(x) < 2:
        mean = float((x - y).mean()) if len(x) else math.nan
        return Paired(len(x), mean, math.nan, math.nan, math.nan)
    with _quiet():
        result = stats.ttest_rel(x, y)
        interval = result.confidence_interval(CONFIDENCE)
    return Paired(
        len(x),
        float((x - y).mean()),
        float(interval.low),
        float(interval.high),
        float(result.pvalue),
    )


@contextmanager
def _quiet() -> Iterator[None]:
    # Seeds that agree exactly (a saturated accuracy) are an answer, not a numerical problem.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        yield
