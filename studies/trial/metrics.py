"""A trial's `metrics.csv` (Lightning's CSVLogger) read back: one mapping of metrics per epoch."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """Fold the logger's rows (one per logging call) into {epoch: {metric: value}}.

    Epochs are Lightning's, counted from 0. Every logged value is kept, NaN and infinity included
    (a diverged epoch is data); a row without an epoch (none is written by regzoo) is skipped.
    """
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            values = by_epoch.setdefault(int(row["epoch"]), {})
            for key, text in row.items():
                if key not in ("epoch", "step") and text not in ("", None):
                    values[key] = float(text)
    return by_epoch
