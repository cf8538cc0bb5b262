"""The finished trials of an experiment as plain records: learning curves and probe outputs."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from studies.experiments._spec import Experiment, Setting


@dataclass
class Curves:
    """Per-epoch metrics from a trial's `metrics.csv`; `epoch[i]` is 1-based."""

    epoch: np.ndarray
    metrics: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.metrics:
            raise KeyError(f"metric {name!r} was not logged; logged: {', '.join(self.metrics)}")
        return self.metrics[name]

    @property
    def last_epoch(self) -> int:
        return int(self.epoch[-1]) if len(self.epoch) else 0

    def at(self, name: str, epoch: int) -> float:
        """The metric's value at a 1-based epoch."""
        return float(self[name][int(np.searchsorted(self.epoch, epoch))])

    def best_epoch(self, name: str = "val/loss") -> int:
        """The 1-based epoch with the lowest finite value of `name` (first one on ties)."""
        values = np.where(np.isfinite(self[name]), self[name], np.inf)
        return int(self.epoch[int(np.argmin(values))])

    def first_below(self, name: str, threshold: float) -> int | None:
        """The first 1-based epoch where `name` is at or below `threshold` (None: never)."""
        hits = np.flatnonzero(self[name] <= threshold)
        return int(self.epoch[hits[0]]) if len(hits) else None


def read_curves(path: Path) -> Curves:
    """Fold Lightning's CSVLogger rows (one per logging call) into one row per epoch."""
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            values = by_epoch.setdefault(int(row["epoch"]), {})
            for key, text in row.items():
                if key not in ("epoch", "step") and text not in ("", None):
                    values[key] = float(text)
    epochs = sorted(e for e, v in by_epoch.items() if "train/loss" in v)
    names = sorted({k for e in epochs for k in by_epoch[e] if not k.startswith("test/")})
    metrics = {
        name: np.array([by_epoch[e].get(name, math.nan) for e in epochs], dtype=np.float64)
        for name in names
    }
    return Curves(epoch=np.array(epochs, dtype=np.int64) + 1, metrics=metrics)


@dataclass
class TrialRecord:
    """One finished trial: which setting and seed, its directory, attributes and curves."""

    setting: Setting
    seed: int
    number: int
    run_dir: Path
    attrs: dict[str, Any]
    curves: Curves

    @property
    def label(self) -> str:
        return self.setting.label

    def file(self, name: str) -> Path:
        """A file a probe wrote into the trial's directory; a clear error when it is missing."""
        path = self.run_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"trial {self.number} ({self.label}) has no {name} in {self.run_dir}; "
                "rerun the experiment with a fresh storage or study"
            )
        return path

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.file(name)) as data:
            return {key: data[key] for key in data.files}

    def losses(self) -> dict[str, float | int]:
        """The usual columns of a row: the last epoch's losses and accuracies, the lowest
        validation loss and its epoch."""
        c, last = self.curves, self.curves.last_epoch
        best = c.best_epoch("val/loss")
        return {
            "epochs": last,
            "train_loss": c.at("train/loss", last),
            "val_loss": c.at("val/loss", last),
            "best_val_loss": c.at("val/loss", best),
            "best_epoch": best,
            "train_acc": c.at("train/acc", last),
            "val_acc": c.at("val/acc", last),
        }


@dataclass
class ExperimentRun:
    """Everything a table or figure needs: the experiment, the mode and the finished trials."""

    experiment: Experiment
    quick: bool
    out_dir: Path
    records: list[TrialRecord] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.experiment.chosen(quick=self.quick)]

    def of(self, label: str) -> list[TrialRecord]:
        """The trials of one setting, one per seed, in seed order."""
        found = sorted((r for r in self.records if r.label == label), key=lambda r: r.seed)
        if not found:
            raise KeyError(f"experiment {self.experiment.name!r} has no trial for {label!r}")
        return found

    def one(self, label: str) -> TrialRecord:
        """The trial of a single-seed setting."""
        return self.of(label)[0]
