"""`regzoo confirm NAME`: is the study's best configuration still best with other seeds?

The top K trials' configurations are each retrained with S new seeds (new initialization,
batches and augmentation draws; the study's data split), each run tested from its best
checkpoint. Per configuration: the mean, sd and 95% interval of the test metrics; and the first
against the second, paired by seed.

    regzoo confirm cnn-digits --top 2 --seeds 5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.results.read import ranked_trials
from regzoo.studies.verdicts.stats import Paired, Summary, paired, summarize
from regzoo.studies.verdicts.store import (
    CONFIRM_ATTR,
    Point,
    VerdictError,
    finished_runs,
    read_request,
    run_seeds,
    stored_config,
)

DEFAULT_TOP = 2
DEFAULT_SEEDS = 5
TEST_METRICS = ("test/acc", "test/loss")


@dataclass(frozen=True)
class Candidate:
    """One configuration under confirmation: the trial it comes from and its runs, by seed."""

    trial: int
    params: dict[str, Any]
    value: float  # the trial's own objective value (one seed: the study's)
    runs: dict[int, FrozenTrial]  # seed -> finished run (diverged ones included)

    @property
    def label(self) -> str:
        return f"trial {self.trial}"

    def values(self, metric: str, seeds: list[int]) -> list[float]:
        """`metric` of the complete runs, in seed order."""
        return [
            float(self.runs[s].user_attrs[metric])
            for s in seeds
            if s in self.runs
            and self.runs[s].state == TrialState.COMPLETE
            and metric in self.runs[s].user_attrs
        ]

    def summary(self, metric: str, seeds: list[int]) -> Summary:
        return summarize(self.values(metric, seeds))


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
        first, second = self.candidates[:2]
        both = [
            s
            for s in self.seeds
            if all(s in c.runs and c.runs[s].state == TrialState.COMPLETE for c in (first, second))
        ]
        return paired(first.values(metric, both), second.values(metric, both))

    @property
    def diverged(self) -> list[tuple[str, int]]:
        return [
            (c.label, s)
            for c in self.candidates
            for s, run in c.runs.items()
            if run.state != TrialState.COMPLETE
        ]


def points(cfg: StudyConfig, trials: list[FrozenTrial], seeds: list[int]) -> list[Point]:
    """The runs of a confirmation: each trial's parameters with each seed."""
    return [
        Point(f"trial {t.number}", cfg, dict(t.params), seed, {"source_trial": t.number})
        for t in trials
        for seed in seeds
    ]


def plan(
    study: optuna.Study, top: int, n_seeds: int
) -> tuple[StudyConfig, list[Point], dict[str, Any]]:
    """The config, the runs and the request a confirmation of the top `top` trials needs."""
    cfg = stored_config(study)
    trials = ranked_trials(study)[:top]
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
        value = trial.value if trial.value is not None else float("nan")
        candidates.append(Candidate(trial.number, dict(trial.params), value, runs))
    return Confirmation(study.study_name, seeds, candidates)
