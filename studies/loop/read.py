"""Read finished studies back from a storage: the study by name, its best trials, their files.

Shared by the verdicts and by `list`, `report`, `export` and `dashboard`, which all start from a
storage URL and, except `list` and `dashboard`, a study name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from regzoo._checks import UserError, is_number
from regzoo.studies.config.schema import Objective
from regzoo.studies.executor.storage import open_storage, storage_path
from regzoo.studies.trial.lifecycle import TIE_BREAK_ATTR


class ResultError(UserError):
    """A study, trial or file that a command needs is missing or unusable: one line for the user."""


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist (reading never creates an empty database)."""
    path = storage_path(url)
    if path is not None and not path.is_file():
        raise ResultError(
            f"storage {url!r} does not exist yet; run a study first (make study) "
            "or pass --storage URL"
        )
    return open_storage(url)


def load_study(name: str, url: str) -> optuna.Study:
    """The study `name` in `url`; a clear error lists the studies that are there."""
    storage = open_existing(url)
    names = optuna.get_all_study_names(storage=storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise ResultError(f"study {name!r} is not in {url}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first; equal values by the `tie_break` user attr where the study's
    config names an `objective.tie_break` (trials without the attr last among them).

    A multi-objective study has no single best: its Pareto front (`study.best_trials`) comes
    first, then the other trials, each part by the first objective."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    ranked = [t for t in done if t.values]
    if is_multi_objective(study):
        front = {t.number for t in study.best_trials}
        return sorted(ranked, key=lambda t: (t.number not in front, sign * t.values[0]))
    objective = _stored_objective(study)
    if objective is None or objective.tie_break is None:
        return sorted(ranked, key=lambda t: sign * (t.value or 0.0))
    tie_sign = -1.0 if objective.tie_break_maximize else 1.0

    def key(t: FrozenTrial) -> tuple[float, bool, float]:
        tie: Any = t.user_attrs.get(TIE_BREAK_ATTR)
        if not is_number(tie):
            return sign * (t.value or 0.0), True, 0.0
        return sign * (t.value or 0.0), False, tie_sign * tie

    return sorted(ranked, key=key)


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study optimizes a list of objectives (Optuna refuses `best_trial`,
    `FrozenTrial.value` and one-target plots there)."""
    return len(study.directions) > 1


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The trials no other complete trial beats on every objective, by the first objective."""
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(study.best_trials, key=lambda t: sign * t.values[0])


def first_value(trial: FrozenTrial) -> float | None:
    """The trial's first (in a single-objective study, its only) objective value."""
    return trial.values[0] if trial.values else None


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objective metrics, in order, from its stored config."""
    raw = stored_config(study) or {}
    section = raw.get("objective", {})
    goals = section if isinstance(section, list) else [section]
    first = str(study.user_attrs.get("objective", "objective"))
    names = [str(g.get("metric", first)) for g in goals]
    return names if len(names) == len(study.directions) else [first]


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    """The config the study last ran with, as stored (its `config` attribute, JSON); None when
    none is stored. Read as it is: a study run by an older regzoo may not fit today's schema."""
    text = study.user_attrs.get("config")
    return json.loads(text) if text else None


def _stored_objective(study: optuna.Study) -> Objective | None:
    """The stored config's (first) objective, which ranks trials (None: none stored)."""
    raw = stored_config(study)
    if raw is None:
        return None
    section = raw.get("objective", {})
    return Objective.model_validate(section[0] if isinstance(section, list) else section)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best complete trial; an error when the study has none yet."""
    ranked = ranked_trials(study)
    if not ranked:
        raise ResultError(f"study {study.study_name!r} has no complete trial yet")
    return ranked[0]


def chosen_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial `number` (`--trial N`), which must be complete; without one, the best trial of a
    single-objective study. A multi-objective study has no best: the error lists its front."""
    if number is not None:
        return complete_trials(study, [number], option="--trial")[0]
    if is_multi_objective(study):
        front = pareto_front(study)
        if not front:
            raise ResultError(f"study {study.study_name!r} has no complete trial yet")
        raise ResultError(
            f"study {study.study_name!r} has {len(study.directions)} objectives and no single "
            f"best trial; pick one of its Pareto front with --trial N: "
            f"{_numbers(t.number for t in front)}"
        )
    return best_trial(study)


def complete_trials(study: optuna.Study, numbers: list[int], *, option: str) -> list[FrozenTrial]:
    """The complete trials `numbers`, in that order; an error names the first that is not one
    and lists the complete ones (the Pareto front first in a multi-objective study)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    complete = [t.number for t in ranked_trials(study)]
    for number in numbers:
        trial = by_number.get(number)
        if trial is not None and trial.state == TrialState.COMPLETE:
            continue
        problem = (
            f"study {study.study_name!r} has no trial {number}"
            if trial is None
            else f"trial {number} is {trial.state.name.lower()}, not complete"
        )
        raise ResultError(
            f"{option} {number}: {problem}; complete trials, best first: "
            f"{_numbers(complete) if complete else 'none yet'}"
        )
    return [by_number[n] for n in numbers]


def _numbers(numbers: Iterable[int], most: int = 20) -> str:
    """Trial numbers for a one-line message: the first `most`, then how many more."""
    shown = list(numbers)
    more = f" (+{len(shown) - most} more)" if len(shown) > most else ""
    return ", ".join(str(n) for n in shown[:most]) + more


def trial_dir(trial: FrozenTrial) -> Path | None:
    """The trial's run directory (its checkpoint's folder), or None when it recorded none."""
    checkpoint = trial.user_attrs.get("checkpoint")
    if not checkpoint or not Path(checkpoint).name:
        return None
    return Path(checkpoint).parent


def study_dir(study: optuna.Study) -> Path:
    """The folder holding the study's trial folders (`runs/<study>` unless `runs_dir` moved it)."""
    for trial in study.get_trials(deepcopy=False):
        folder = trial_dir(trial)
        if folder is not None:
            return folder.parent
    return Path("runs") / study.study_name


def checkpoint_of(trial: FrozenTrial) -> Path:
    """The trial's best checkpoint, which must exist on this machine."""
    recorded = trial.user_attrs.get("checkpoint")
    if not recorded or not Path(recorded).name.endswith(".ckpt"):
        raise ResultError(f"trial {trial.number} recorded no checkpoint")
    path = Path(recorded)
    if not path.is_file():
        raise ResultError(
            f"checkpoint {recorded!r} of trial {trial.number} is missing "
            "(runs/ deleted, or the study ran in another folder or machine)"
        )
    return path
