"""An experiment's grid as populations: the settings that may train as one batched model.

Two grid points (a setting and a seed) share a population when their configs differ only in
what the members of one population may differ in (`population.members.is_member_key`: the
learning rate, the penalties, dropout, the initialization, the schedule's values, the
augmentation strengths) and they train with the same seed, so that the population's batch order
is each member's own (augmentation and dropout draws are the population's, see
`population.train`). A population's config is what its points have in common; each point's own
values are its member `params`, merged over that config as a study merges a trial's. Every
point is checked to train on exactly the model, data and trainer arguments of its own config,
else it trains alone. Groups larger than `size` are split into balanced populations.

    populations = plan(exp, points, configs, quick=True, size=64)
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regzoo._dicts import set_dotted
from regzoo.studies.config.load import validate_config
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.experiments._spec import Experiment, Setting, trial_params
from regzoo.studies.population.members import is_member_key

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
    """Points trained together: the shared config and, per point, its member params."""

    cfg: StudyConfig
    points: list[Point]
    params: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.points)


def plan(
    exp: Experiment,
    points: list[Point],
    configs: Mapping[str, StudyConfig],
    *,
    quick: bool,
    size: int,
) -> list[Population]:
    """The fewest populations of at most `size` members that train `points` as their own
    configs (`configs`, by label) would, in the order of the points' first appearance."""
    groups: dict[str, list[tuple[Point, dict[str, Any]]]] = {}
    for p in points:
        leaves = _flatten(exp.raw_config(p.setting, quick=quick))
        shared = {k: v for k, v in leaves.items() if not _member_key(k)}
        key = json.dumps([shared, p.seed], sort_keys=True, default=str)
        groups.setdefault(key, []).append((p, leaves))
    populations: list[Population] = []
    for group in groups.values():
        for chunk in _chunks(group, size):
            populations += _populations(exp, chunk, configs, quick)
    return populations


def _populations(
    exp: Experiment,
    chunk: list[tuple[Point, dict[str, Any]]],
    configs: Mapping[str, StudyConfig],
    quick: bool,
) -> list[Population]:
    """One population of the chunk's points (each with its config's dotted leaves); a point
    whose member params would not give it its own training arguments trains alone."""
    if len(chunk) == 1:
        return [_alone(chunk[0][0], configs, quick)]
    first = chunk[0][1]
    common = {k: v for k, v in first.items() if all(lv.get(k, _MISSING) == v for _, lv in chunk)}
    source = f"experiment {exp.name!r}, population of {', '.join(p.label for p, _ in chunk)}"
    cfg = validate_config(_unflatten(common), source=source)
    joined, alone = Population(cfg, [], []), []
    for p, leaves in chunk:
        own = _own_params(p, quick)
        params = {**own, **_uncovered(leaves, common, own)}
        if _training(cfg, params) == _training(configs[p.label], own):
            joined.points.append(p)
            joined.params.append(params)
        else:
            alone.append(_alone(p, configs, quick))
    return ([joined] if joined.points else []) + alone


def _alone(p: Point, configs: Mapping[str, StudyConfig], quick: bool) -> Population:
    """A population of one: the point's own config and params, as `run_trial` gets them."""
    return Population(configs[p.label], [p], [_own_params(p, quick)])


def _own_params(p: Point, quick: bool) -> dict[str, Any]:
    return trial_params(p.setting.keys(quick=quick))


def _uncovered(
    leaves: dict[str, Any], common: dict[str, Any], own: dict[str, Any]
) -> dict[str, Any]:
    """The point's values outside the common config that its setting's keys do not set (a
    quick run's key, say): dotted leaves, each set over the population's config."""
    out = {}
    for key, value in leaves.items():
        parts = key.split(".")
        covered = any(".".join(parts[:n]) in own for n in range(1, len(parts) + 1))
        if key not in common and not covered:
            out[key] = value
    return out


def _training(cfg: StudyConfig, params: dict[str, Any]) -> Any:
    """What a run trains on: the model, data and trainer arguments `train_run` builds from
    `cfg` and `params`, and every other section of the config."""
    model, data, trainer = split_params(cfg, params)
    rest = cfg.model_dump(mode="json", exclude=TRAINING_SECTIONS)
    return cfg.model.name, cfg.data.name, model, data, trainer, rest


def _member_key(key: str) -> bool:
    return key == AUGMENT or is_member_key(key)


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
