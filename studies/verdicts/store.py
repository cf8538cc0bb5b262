"""Where verdicts live: each retraining is a trial of the study's companion `<study>.seeds` in
the same storage; what `confirm` and `ablate` asked for is a user attribute of the study.

A retraining ("run") is identified by its fingerprint: what it trains (the model, data and
trainer values after the search's parameters are applied, early stopping, the checkpoint kept)
and its seed. `confirm` and `ablate` look runs up by fingerprint, so the best configuration
trained with seed s for `confirm` is the full configuration of `ablate` with seed s, trained
once; a rerun trains only what has no finished run yet. A run is finished when its trial is
COMPLETE, or FAIL because it diverged (an outcome, reported as such); a run interrupted by
Ctrl-C or killed is FAIL (or left RUNNING by SIGKILL) and is trained again.

The study's attributes `confirm` and `ablate` (JSON) are written once every run they name has
finished, so an interrupted command leaves the study's verdicts as they were.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from regzoo._checks import UserError
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.loop import read
from regzoo.studies.trial.lifecycle import DIVERGED_ATTR
from regzoo.studies.verdicts.stats import Paired, Summary, paired, summarize

COMPANION_SUFFIX = ".seeds"
# Trial n of a study trains with seed + n, n < 100_000 (the schema's limit on `trials`): runs
# use seed + SEED_OFFSET + i, never a seed of a trial.
SEED_OFFSET = 100_000
CONFIRM_ATTR = "confirm"
ABLATE_ATTR = "ablate"


class VerdictError(UserError):
    """A verdict that cannot be made (no complete trial, nothing to switch off): one line."""


@dataclass(frozen=True)
class Point:
    """One run: a configuration (`cfg` with `params` applied, as a study trial) and a seed."""

    label: str
    cfg: StudyConfig
    params: dict[str, Any]
    seed: int
    attrs: dict[str, Any] = field(default_factory=dict)  # recorded on the run's trial

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cfg, self.params, self.seed)


@dataclass(frozen=True)
class SeededRuns:
    """The finished runs of one configuration, by seed (diverged ones included)."""

    runs: dict[int, FrozenTrial]

    def complete(self, seed: int) -> bool:
        return seed in self.runs and self.runs[seed].state == TrialState.COMPLETE

    def values(self, metric: str, seeds: list[int]) -> list[float]:
        """`metric` of the complete runs, in seed order."""
        return [
            float(self.runs[s].user_attrs[metric])
            for s in seeds
            if self.complete(s) and metric in self.runs[s].user_attrs
        ]

    def summary(self, metric: str, seeds: list[int]) -> Summary:
        return summarize(self.values(metric, seeds))


def compare(a: SeededRuns, b: SeededRuns, seeds: list[int], metric: str) -> Paired:
    """`a` minus `b` over the seeds where both completed, paired by seed."""
    both = [s for s in seeds if a.complete(s) and b.complete(s)]
    return paired(a.values(metric, both), b.values(metric, both))


def fingerprint(cfg: StudyConfig, params: dict[str, Any], seed: int) -> str:
    """What a finished run must match to stand for a point (see the module docstring)."""
    model, data, trainer = split_params(cfg, params)
    what = {
        "model": [cfg.model.name, model],
        "data": [cfg.data.name, data],
        "trainer": trainer,
        "early_stopping": cfg.early_stopping and cfg.early_stopping.model_dump(),
        "objective": cfg.objectives[0].model_dump(),
        "checkpoint": cfg.checkpoint,
        "seed": seed,
    }
    text = json.dumps(what, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_seeds(cfg: StudyConfig, n: int) -> list[int]:
    """The seeds of a verdict's runs: `n` new ones, the same for every configuration."""
    return [cfg.seed + SEED_OFFSET + i for i in range(n)]


def companion_name(study_name: str) -> str:
    return study_name + COMPANION_SUFFIX


def is_companion(study_name: str) -> bool:
    return study_name.endswith(COMPANION_SUFFIX)


def open_companion(study: optuna.Study, url: str) -> optuna.Study:
    """The study's companion, created on first use (same storage and direction, no pruning)."""
    return optuna.create_study(
        storage=open_storage(url),
        study_name=companion_name(study.study_name),
        directions=study.directions,
        sampler=optuna.samplers.RandomSampler(seed=0),  # never asked: runs set no parameter
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def load_companion(study: optuna.Study, url: str) -> optuna.Study | None:
    """The companion in `url` if it exists, read without creating it."""
    storage = open_storage(url)
    name = companion_name(study.study_name)
    if name not in optuna.get_all_study_names(storage=storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def finished_runs(companion: optuna.Study | None) -> dict[str, FrozenTrial]:
    """The latest finished run of each fingerprint (complete, or failed by diverging)."""
    if companion is None:
        return {}
    latest: dict[str, FrozenTrial] = {}
    for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        key = t.user_attrs.get("fingerprint")
        if isinstance(key, str) and (
            t.state == TrialState.COMPLETE or DIVERGED_ATTR in t.user_attrs
        ):
            latest[key] = t
    return latest


def stored_config(study: optuna.Study) -> StudyConfig:
    """The config the study last ran with; an error for a study that records none."""
    raw = read.stored_config(study)
    if raw is None:
        raise VerdictError(
            f"study {study.study_name!r} records no config (made by another tool?); "
            "rerun it with regzoo run"
        )
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise VerdictError(
            f"study {study.study_name!r} was run with a config this regzoo cannot read "
            f"({exc.error_count()} error(s), first: {exc.errors()[0]['loc']}); rerun it with "
            "regzoo run"
        ) from None


def read_request(study: optuna.Study, attr: str) -> dict[str, Any] | None:
    """What the last finished `confirm` (attr `confirm`) or `ablate` recorded, if any."""
    text = study.user_attrs.get(attr)
    return json.loads(text) if isinstance(text, str) else None


def write_request(study: optuna.Study, attr: str, request: dict[str, Any]) -> None:
    study.set_user_attr(attr, json.dumps(request, sort_keys=True))
