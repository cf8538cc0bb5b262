"""What an experiment is, as data: a base study config, the settings of the factor under test,
the probes each trial carries, and the table and figure made from the finished trials."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightning as L

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from studies.config import StudyConfig
    from studies.experiments._records import ExperimentRun

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
        name: Name on the command line (`python -m studies experiment NAME`).
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
                set_key(raw, key, copy.deepcopy(value))
        return raw


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_key(raw, "model.lr", 0.3)` sets raw["model"]["lr"], creating sections on the way."""
    *path, leaf = dotted.split(".")
    node = raw
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def trial_params(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A setting's model/data/trainer keys, as a study's sampled parameters (W&B config)."""
    return {
        key: value
        for key, value in overrides.items()
        if key.partition(".")[0] in ("model", "data", "trainer") and "." in key
    }
