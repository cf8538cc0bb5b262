"""What an experiment is, as data: a base study config, the settings of the factor under test,
the probes each trial carries, and the table and figure made from the finished trials; and its
finished trials as plain records (learning curves and probe outputs) that tables and figures
read."""

from __future__ import annotations

import copy
import importlib
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np

from regzoo._dicts import set_dotted
from regzoo.studies.trial.metrics import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from regzoo.studies.config.schema import StudyConfig

Row = dict[str, Any]


@dataclass(frozen=True)
class Setting:
    """One level of the factor under test: a label and the config keys it sets.

    `overrides` maps dotted config keys (`model.lr`, `trainer.max_epochs`, `early_stopping`) to
    values, set on the experiment's base config before it is validated; `quick` keys are set
    after them in `--quick` runs (e.g. a shorter schedule for a setting with its own epochs).
    """

    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)

    def keys(self, *, quick: bool) -> dict[str, Any]:
        """The config keys this setting sets in a full or a `--quick` run."""
        return {**self.overrides, **(self.quick if quick else {})}


@dataclass(frozen=True)
class Experiment:
    """A lecture experiment: a grid study over `settings`, then a table and a figure.

    Args:
        name: Name on the command line (`regzoo experiment NAME`).
        title: One line saying what is compared, shown above the figure.
        factor: Name of the Optuna grid dimension whose values are the settings' labels.
        base: Study config every setting starts from (the YAML schema, without `name`).
        settings: The levels of the factor, in the order tables and figures show them.
        table: Rows of the result table, from the finished trials.
        figure: The figure, from the finished trials and the table's rows.
        quick: Config keys set in `--quick` runs (fewer epochs, less data).
        quick_labels: The settings a `--quick` run keeps (None: all of them).
        seeds: Seeds each setting is trained with (replicates, a second grid dimension).
        probes: Lightning callbacks to attach to one trial (fresh ones per trial); each may
            write files into the trial's directory and offer `summary()` for its user attrs.
    """

    name: str
    title: str
    factor: str
    base: Mapping[str, Any]
    settings: Sequence[Setting]
    table: Callable[[ExperimentRun], list[Row]]
    figure: Callable[[ExperimentRun, list[Row]], Figure]
    quick: Mapping[str, Any] = field(default_factory=dict)
    quick_labels: Sequence[str] | None = None
    seeds: Sequence[int] = (0,)
    probes: Callable[[StudyConfig], list[L.Callback]] = lambda cfg: []

    def study_name(self, *, quick: bool) -> str:
        return f"experiment-{self.name}" + ("-quick" if quick else "")

    def chosen(self, *, quick: bool) -> list[Setting]:
        """The settings a run trains: all of them, or the quick subset."""
        if not quick or self.quick_labels is None:
            return list(self.settings)
        return [s for s in self.settings if s.label in self.quick_labels]

    def replicates(self, *, quick: bool) -> list[int]:
        """The seeds a run trains each setting with: one in `--quick` runs."""
        return list(self.seeds[:1] if quick else self.seeds)

    def raw_config(self, setting: Setting | None, *, quick: bool) -> dict[str, Any]:
        """The study config of one setting (or of the study itself), before validation."""
        raw = copy.deepcopy(dict(self.base))
        raw["name"] = self.study_name(quick=quick)
        layers = [self.quick if quick else {}, setting.keys(quick=quick) if setting else {}]
        for layer in layers:
            for key, value in layer.items():
                set_dotted(raw, key.split("."), copy.deepcopy(value))
        return raw


def trial_params(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A setting's model/data/trainer keys, as a study's sampled parameters (W&B config)."""
    return {
        key: value
        for key, value in overrides.items()
        if key.partition(".")[0] in ("model", "data", "trainer") and "." in key
    }


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
    by_epoch = read_metrics(path)
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
        validation loss and its epoch, and the generalization gap there (the kept epoch's:
        `best_gap_acc` = train_eval/acc − val/acc, `best_gap_loss` = val/loss −
        train_eval/loss, the training split evaluated as validation is, without dropout or
        augmentation, unlike `train_loss`)."""
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
            **self.gaps(),
        }

    def gaps(self) -> dict[str, float]:
        """The kept epoch's gaps (`best_gap_acc`, `best_gap_loss`); NaN where not measured."""
        return {
            "best_gap_acc": float(self.attrs.get("gap/acc", math.nan)),
            "best_gap_loss": float(self.attrs.get("gap/loss", math.nan)),
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


# Experiments that no module holds (made at run time, `dataclasses.replace` of one), by name:
# their probes are built in this process only.
_LOCAL: dict[str, Experiment] = {}


def experiment_ref(exp: Experiment) -> str:
    """Where the process that trains a setting finds `exp`: `module:attribute` of the module
    attribute that holds it (a shipped experiment's `EXPERIMENT`, or one in a user's or a
    test's module), so that a spawned worker imports it; else `local:<name>`, found in this
    process alone."""
    for name, module in list(sys.modules.items()):
        for attribute, value in list(vars(module).items()):
            if value is exp:
                return f"{name}:{attribute}"
    _LOCAL[exp.name] = exp
    return f"local:{exp.name}"


def setting_probes(where: str, cfg: StudyConfig) -> list[Any]:
    """The probes of an experiment's setting, built where it trains (a `ProbeRef`'s factory)
    from `experiment_ref`'s answer."""
    module, _, attribute = where.partition(":")
    if module == "local":
        if attribute not in _LOCAL:
            raise RuntimeError(
                f"experiment {attribute!r} exists only in the process that made it: train it "
                "with --workers 1, or define it at a module's top level"
            )
        return list(_LOCAL[attribute].probes(cfg))
    return list(getattr(importlib.import_module(module), attribute).probes(cfg))
