"""An experiment's grid as populations: the settings that may train as one batched model.

Two grid points (a setting and a seed) share a population when their configs differ only in
what the members of one population may differ in: their params (`population.members.is_member_key`:
the learning rate, the penalties, dropout, the initialization, the schedule's values, the
augmentation strengths) and their own early stopping and `max_epochs`
(`population.members.MEMBER_SECTIONS`, from each member's own config). Each member keeps its
seed's batch order and initial weights (augmentation and dropout draws are the population's, see
`population.train`). A population's config is what its points have in common; each point's own
values are its member `params`, merged over that config as a study merges a trial's. Every
point is checked to train on exactly the model, data and trainer arguments of its own config,
else it trains alone. Groups larger than `size` are split into balanced populations.

    populations = plan_all([(exp, p) for p in points], {exp.name: configs}, quick=True, size=64)
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from regzoo._dicts import set_dotted
from regzoo.studies.config.load import validate_config
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.experiments._spec import Experiment, Setting, trial_params
from regzoo.studies.population.members import MEMBER_SECTIONS, is_member_key, shared_values

# `data.augment: null` (no augmentation) is a member's own value like any strength.
AUGMENT = "data.augment"
# What `split_params` does not carry: every other section must agree within a population.
TRAINING_SECTIONS = {"model", "data", "trainer"}


@dataclass(frozen=True)
class Point:
    """One grid point of an experiment: a setting trained with a seed."""

    setting: Setting
    seed: int

    @property
    def label(self) -> str:
        return self.setting.label


@dataclass
class Population:
    """Points trained together: the shared config and, per point, its member params and its
    experiment (`regzoo experiment all` batches settings of different experiments)."""

    cfg: StudyConfig
    points: list[Point]
    params: list[dict[str, Any]]
    experiments: list[Experiment] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points)

    def add(self, exp: Experiment, point: Point, params: dict[str, Any]) -> None:
        self.experiments.append(exp)
        self.points.append(point)
        self.params.append(params)


# Each experiment's configs by setting label, by experiment name.
Configs = Mapping[str, Mapping[str, StudyConfig]]
# What a population's members need not share beyond their member keys: the study's name.
OWN_LEAVES = ("name",)


def plan_all(
    items: list[tuple[Experiment, Point]], configs: Configs, *, quick: bool, size: int
) -> list[Population]:
    """The fewest populations of at most `size` members that train each (experiment, point) as
    its own config (`configs[experiment][label]`) would, in the order of first appearance;
    points of different experiments share a population wherever points of one could."""
    groups: dict[str, list[tuple[Experiment, Point, dict[str, Any]]]] = {}
    for exp, p in items:
        leaves = _flatten(exp.raw_config(p.setting, quick=quick))
        shared = {
            k: v
            for k, v in shared_values(leaves).items()
            if not _member_key(k) and k not in OWN_LEAVES
        }
        key = json.dumps(shared, sort_keys=True, default=str)
        groups.setdefault(key, []).append((exp, p, leaves))
    populations: list[Population] = []
    for group in groups.values():
        for chunk in _chunks(group, size):
            populations += _populations(chunk, configs, quick)
    return populations


def _populations(
    chunk: list[tuple[Experiment, Point, dict[str, Any]]], configs: Configs, quick: bool
) -> list[Population]:
    """One population of the chunk's points (each with its config's dotted leaves); a point
    whose member params would not give it its own training arguments trains alone."""
    if len(chunk) == 1:
        return [_alone(chunk[0][0], chunk[0][1], configs, quick)]
    first = chunk[0][2]
    common = {k: v for k, v in first.items() if all(lv.get(k, _MISSING) == v for _, _, lv in chunk)}
    common.setdefault("name", first["name"])  # the first experiment's, where several meet
    names = ", ".join(f"{e.name}/{p.label}" for e, p, _ in chunk)
    cfg = validate_config(_unflatten(common), source=f"population of {names}")
    joined, alone = Population(cfg, [], []), []
    for exp, p, leaves in chunk:
        own = _own_params(p, quick)
        params = {**own, **_uncovered(leaves, common, own)}
        if _training(cfg, params) == _training(configs[exp.name][p.label], own):
            joined.add(exp, p, params)
        else:
            alone.append(_alone(exp, p, configs, quick))
    return ([joined] if joined.points else []) + alone


def _alone(exp: Experiment, p: Point, configs: Configs, quick: bool) -> Population:
    """A population of one: the point's own config and params, as `run_trial` gets them."""
    return Population(configs[exp.name][p.label], [p], [_own_params(p, quick)], [exp])


def _own_params(p: Point, quick: bool) -> dict[str, Any]:
    return trial_params(p.setting.keys(quick=quick))


def _uncovered(
    leaves: dict[str, Any], common: dict[str, Any], own: dict[str, Any]
) -> dict[str, Any]:
    """The point's values outside the common config that its setting's keys do not set (a
    quick run's key, say): dotted leaves, each set over the population's config. Its early
    stopping is not one: a member takes that from its own config (`MEMBER_SECTIONS`)."""
    out = {}
    for key, value in leaves.items():
        parts = key.split(".")
        covered = any(".".join(parts[:n]) in own for n in range(1, len(parts) + 1))
        if key not in common and not covered and parts[0] in TRAINING_SECTIONS:
            out[key] = value
    return out


def _training(cfg: StudyConfig, params: dict[str, Any]) -> Any:
    """What a run trains on: the model, data and trainer arguments `train_run` builds from
    `cfg` and `params`, and every other section of the config, except what a member takes
    from its own config (`MEMBER_SECTIONS`)."""
    model, data, trainer = split_params(cfg, params)
    trainer.pop("max_epochs")
    own = TRAINING_SECTIONS | {"early_stopping", *OWN_LEAVES}
    rest = cfg.model_dump(mode="json", exclude=own)
    return cfg.model.name, cfg.data.name, model, data, trainer, rest


def _member_key(key: str) -> bool:
    own = any(key == s or key.startswith(s + ".") for s in MEMBER_SECTIONS)
    return own or key == AUGMENT or is_member_key(key)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    """`items` in order, in ceil(n / size) chunks whose sizes differ by at most one."""
    n = math.ceil(len(items) / size)
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


class _Missing:
    """A key a config does not have (distinct from any value, `None` included)."""


_MISSING = _Missing()


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaves of a raw config: a non-empty mapping is a section, anything else a value."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= _flatten(value, path + ".")
        else:
            out[path] = value
    return out


def _unflatten(leaves: Mapping[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key, value in leaves.items():
        set_dotted(raw, key.split("."), value)
    return raw
