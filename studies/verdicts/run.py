"""Train the runs of a verdict that have no finished run yet, as trials of the companion study.

Each run is the studies' own objective (`run_trial`): the same Trainer, early stopping,
checkpoint and test of its best epoch, records and W&B run as a study trial, with the point's
seed and no pruning. Ctrl-C fails the run being trained (Optuna records it FAIL) and stops;
the runs finished before it are kept and the same command trains only the rest. A run whose
process was killed (SIGKILL) is failed by the next command (`fail_abandoned`) and trained again.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo.studies._compat import fail_trial
from regzoo.studies.loop.budget import WORKER_ATTR, died_here, worker_id
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.results.console import quiet_training, trial_line
from regzoo.studies.trial.objective import run_trial
from regzoo.studies.trial.signals import InterruptOnce, raise_if_swallowed
from regzoo.studies.trial.train import NonFiniteObjective, TrialResult
from regzoo.studies.verdicts.store import DIVERGED_ATTR, Point, finished_runs


def fail_abandoned(companion: optuna.Study) -> None:
    """Fail the runs nobody is training any more, without retrying them: a run is planned by
    its fingerprint, so a retried copy would only be left waiting. A killed local process's run
    fails at once, another machine's after the storage's heartbeat grace period."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(companion)  # the storage's retry callback may queue a copy: failed below
    for trial in companion.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if died_here(trial):
            fail_trial(companion, trial)
    for trial in companion.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        fail_trial(companion, trial)  # never enqueued by a verdict: a retried copy


def missing_points(companion: optuna.Study, points: Sequence[Point]) -> list[Point]:
    """The points without a finished run, each fingerprint once, in order."""
    done = finished_runs(companion)
    missing: dict[str, Point] = {}
    for point in points:
        if point.fingerprint not in done:
            missing.setdefault(point.fingerprint, point)
    return list(missing.values())


def train_points(
    companion: optuna.Study,
    points: Sequence[Point],
    *,
    folder: Path,
    kind: str,
    wandb_mode: str,
    console: Console,
) -> int:
    """Train the missing points into `folder/run-<n>/`; how many were trained."""
    fail_abandoned(companion)
    missing = missing_points(companion, points)
    if not missing:
        return 0
    queue: Iterator[Point] = iter(missing)
    metric = missing[0].cfg.objective.metric

    def objective(trial: optuna.Trial) -> float:
        point = next(queue)
        for key, value in {
            WORKER_ATTR: worker_id(),
            "kind": kind,
            "label": point.label,
            "seed": point.seed,
            "fingerprint": point.fingerprint,
            **point.attrs,
        }.items():
            trial.set_user_attr(key, value)

        def diverged(result: TrialResult) -> dict[str, int]:
            return {} if result.nonfinite_at is None else {DIVERGED_ATTR: result.nonfinite_at}

        return run_trial(
            trial,
            point.cfg,
            point.params,
            folder / f"run-{trial.number}",
            seed=point.seed,
            wandb_mode=wandb_mode,
            run_name=f"{kind}-{trial.number}",
            extra_attrs=diverged,
        )

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        label = trial.user_attrs.get("label", "?")
        seed = trial.user_attrs.get("seed", "?")
        line = trial_line(trial, metric).replace(
            f"trial {trial.number:>3}", f"run {trial.number:>3}"
        )
        console.print(f"{line}  [dim]{label}, seed {seed}[/]", soft_wrap=True)

    with quiet_training(), InterruptOnce(), collect_after_trials() as collect:
        companion.optimize(
            objective,
            n_trials=len(missing),
            catch=(NonFiniteObjective,),
            callbacks=[collect, report, lambda study, trial: raise_if_swallowed()],
        )
    return len(missing)
