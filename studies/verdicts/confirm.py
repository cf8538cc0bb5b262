"""`regzoo confirm NAME`: is the study's best configuration still best with other seeds?

The top K trials' configurations are each retrained with S new seeds (new initialization,
batches and augmentation draws; the study's data split), each run tested from its best
checkpoint. Per configuration: the mean, sd and 95% interval of the test metrics; and the first
against the second, paired by seed.

    regzoo confirm cnn-digits --top 2 --seeds 5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.loop.read import complete_trials, first_value, ranked_trials
from regzoo.studies.verdicts.stats import Paired
from regzoo.studies.verdicts.store import (
    CONFIRM_ATTR,
    Point,
    SeededRuns,
    VerdictError,
    compare,
    finished_runs,
    read_request,
    run_seeds,
    stored_config,
)

DEFAULT_TOP = 2
DEFAULT_SEEDS = 5
TEST_METRICS = ("test/acc", "test/loss")


@dataclass(frozen=True)
class Candidate(SeededRuns):
    """One configuration under confirmation: the trial it comes from and its runs, by seed."""

    trial: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    value: float = math.nan  # the trial's own objective value (one seed: the study's)

    @property
    def label(self) -> str:
        return f"trial {self.trial}"


@dataclass(frozen=True)
class Confirmation:
    """A finished confirmation: the candidates, best first, with their runs."""

    study: str
    seeds: list[int]
    candidates: list[Candidate]

    def comparison(self, metric: str = "test/acc") -> Paired | None:
        """The first configuration minus the second over the seeds where both completed."""
        if len(self.candidates) < 2:
            return None
        return compare(self.candidates[0], self.candidates[1], self.seeds, metric)

    @property
    def diverged(self) -> list[tuple[str, int]]:
        return [(c.label, s) for c in self.candidates for s in c.runs if not c.complete(s)]


def points(cfg: StudyConfig, trials: list[FrozenTrial], seeds: list[int]) -> list[Point]:
    """The runs of a confirmation: each trial's parameters with each seed."""
    return [
        Point(f"trial {t.number}", cfg, dict(t.params), seed, {"source_trial": t.number})
        for t in trials
        for seed in seeds
    ]


def plan(
    study: optuna.Study, top: int, n_seeds: int, numbers: list[int] | None = None
) -> tuple[StudyConfig, list[Point], dict[str, Any]]:
    """The config, the runs and the request a confirmation of the top `top` trials needs, or
    of trials `numbers` (`--trials`; a multi-objective study's top is its front by its first
    objective)."""
    cfg = stored_config(study)
    if numbers is None:
        trials = ranked_trials(study)[:top]
    else:
        trials = complete_trials(study, numbers, option="--trials")
    if not trials:
        raise VerdictError(
            f"study {study.study_name!r} has no complete trial to confirm yet; run it first"
        )
    seeds = run_seeds(cfg, n_seeds)
    planned = points(cfg, trials, seeds)
    runs: dict[str, dict[str, str]] = {}
    for point in planned:
        runs.setdefault(str(point.attrs["source_trial"]), {})[str(point.seed)] = point.fingerprint
    request = {"trials": [t.number for t in trials], "seeds": seeds, "runs": runs}
    return cfg, planned, request


def read_confirmation(study: optuna.Study, companion: optuna.Study | None) -> Confirmation | None:
    """The last finished confirmation of the study, or None."""
    request = read_request(study, CONFIRM_ATTR)
    if request is None or companion is None:
        return None
    seeds = [int(s) for s in request["seeds"]]
    done = finished_runs(companion)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    candidates = []
    for number in request["trials"]:
        trial = by_number[int(number)]
        fingerprints = request["runs"][str(number)]
        runs = {int(s): done[fp] for s, fp in fingerprints.items() if fp in done}
        value = first_value(trial)
        candidates.append(
            Candidate(runs, trial.number, dict(trial.params), math.nan if value is None else value)
        )
    return Confirmation(study.study_name, seeds, candidates)
