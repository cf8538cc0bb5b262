"""Train the runs of a verdict that have no finished run yet, as trials of the companion study.

Each run is a trial spec handed to the executor, as a study's trials are: the same lifecycle
(early stopping, the kept checkpoint and its test), records and W&B run as a study trial, with
the point's seed and no pruning; the seeds of a configuration, and configurations that differ
in what members may differ in, train as one population (`--population 1`: one Trainer each).
Ctrl-C fails the runs being trained and stops; the runs finished before it are kept and the
same command trains only the rest. A run whose
process was killed (SIGKILL) is failed by the next command (`fail_abandoned`) and trained again.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies._compat import ASK_HEARTBEAT_WARNING, fail_trial, member_heartbeats
from regzoo.studies.executor import Trials, execute, plan
from regzoo.studies.executor.trials import WORKER_ATTR, died_here, fail_untold, worker_id
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.population.members import fallback_reason
from regzoo.studies.trial.console import quiet_training, result_line
from regzoo.studies.trial.signals import InterruptOnce, raise_if_swallowed
from regzoo.studies.trial.spec import RunResult, TrialRef, TrialSpec
from regzoo.studies.verdicts.store import Point, finished_runs

# Every seed of every configuration batches: a confirmation's or an ablation's runs share the
# network and the data, and differ in what members may differ in.
DEFAULT_POPULATION = 64


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
    url: str,
    folder: Path,
    kind: str,
    wandb_mode: str,
    console: Console,
    population: int = DEFAULT_POPULATION,
) -> int:
    """Train the missing points into `folder/run-<n>/`, as populations of up to `population`
    runs where they batch; how many were trained."""
    fail_abandoned(companion)
    missing = missing_points(companion, points)
    if not missing:
        return 0
    metric = missing[0].cfg.objectives[0].metric
    trials = Trials()
    specs = [_planned(point, folder, kind) for point in missing]
    size = max(1, min(population, len(specs)))

    def ask(spec: TrialSpec) -> TrialSpec:  # as its job starts: a trial only for a run that does
        return _ask(companion, url, spec, folder, kind, trials)

    def report(spec: TrialSpec, result: RunResult) -> None:
        line = result_line(result, spec, metric).replace(
            f"trial {result.number:>3}", f"run {result.number:>3}"
        )
        console.print(f"{line}  [dim]{spec.attrs['label']}, seed {spec.seed}[/]", soft_wrap=True)

    with quiet_training(), InterruptOnce(), collect_after_trials() as collect:
        with fail_untold(trials), member_heartbeats(companion, trials.asked):
            execute(
                plan(specs, size=size),
                wandb_mode=wandb_mode,
                trials=trials,
                on_result=report,
                prepare=ask,
            )
        collect()
        raise_if_swallowed()
    return len(missing)


def _planned(point: Point, folder: Path, kind: str) -> TrialSpec:
    """The point's run before its trial exists."""
    return TrialSpec(
        config=point.cfg,
        params=point.params,
        run_dir=folder,
        seed=point.seed,
        run_name=kind,
        attrs={
            "kind": kind,
            "label": point.label,
            "seed": point.seed,
            "fingerprint": point.fingerprint,
            **point.attrs,
        },
        prune=False,
        batchable=fallback_reason(point.cfg) is None,
    )


def _ask(
    companion: optuna.Study, url: str, spec: TrialSpec, folder: Path, kind: str, trials: Trials
) -> TrialSpec:
    """The run with its trial asked from the companion study, the point's records on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ASK_HEARTBEAT_WARNING)
        trial = companion.ask()
    for key, value in {WORKER_ATTR: worker_id(), **spec.attrs}.items():
        trial.set_user_attr(key, value)
    ref = TrialRef(url, companion.study_name, trial.number)
    trials.add(ref, trial)
    return dataclasses.replace(
        spec, run_dir=folder / f"run-{trial.number}", run_name=f"{kind}-{trial.number}", trial=ref
    )
