"""A study's trials trained K at a time: claim K slots, ask K trials, train them as populations.

The trial budget, the worker record and the failure streak hold as in `loop.study._optimize`:
a population claims its K slots under the study's lock (fewer when fewer are left), each member
is an Optuna trial of its own (told COMPLETE, PRUNED or FAIL with what `run_trial` records),
and a Ctrl-C fails every member still running before it stops the study, so a rerun asks again.
A worker killed with SIGKILL leaves its members RUNNING with its pid: the next claim fails them
and queues their parameters again (`loop.budget`), and `study.ask` takes those first.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies._compat import ASK_HEARTBEAT_WARNING, member_heartbeats
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.loop.budget import WORKER_ATTR, TrialBudget, worker_id
from regzoo.studies.population.members import MemberSpec, group
from regzoo.studies.population.train import train_population
from regzoo.studies.trial.objective import record_result
from regzoo.studies.trial.signals import raise_if_swallowed
from regzoo.studies.trial.train import error_text, nonfinite_reason

POPULATION_ATTR = "population"  # a member's user attr: the numbers of its population's trials


def optimize_populations(
    study: optuna.Study,
    cfg: StudyConfig,
    budget: TrialBudget,
    *,
    folder: Any,
    timeout: float | None,
    wandb_mode: str,
    on_finished: Any,
    max_failures: int,
) -> None:
    """Train populations of `cfg.population.size` until the budget is spent, `timeout` seconds
    have passed (no new population starts after it), or `max_failures` trials failed in a row.

    `on_finished(trial)` is called with each member's finished trial, in order.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    streak = 0
    me = worker_id()
    while deadline is None or time.monotonic() < deadline:
        wanted = budget.claim_slots(cfg.population.size)
        if not wanted:
            return
        specs: list[MemberSpec] = []
        try:
            for _ in range(wanted):
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=ASK_HEARTBEAT_WARNING)
                    trial = study.ask()
                trial.set_user_attr(WORKER_ATTR, me)
                specs.append(_spec(trial, cfg, folder))
        except BaseException:
            _fail_running(study, specs, "could not start its population")
            raise
        finally:
            budget.release()
        with member_heartbeats(study, [m.trial for m in specs]):  # type: ignore[misc]
            trained = _train_all(study, cfg, specs, wandb_mode)
        for finished in trained:
            on_finished(finished)
            streak = streak + 1 if finished.state == TrialState.FAIL else 0
        raise_if_swallowed()  # a Ctrl-C a finalizer swallowed, after the trials are recorded
        if streak >= max_failures:
            return


def _spec(trial: optuna.Trial, cfg: StudyConfig, folder: Any) -> MemberSpec:
    """Trial n: its sampled parameters, `folder/trial-<n>`, seed `cfg.seed + n`."""
    params = suggest(trial, cfg.search)
    return MemberSpec(
        trial,
        params,
        folder / f"trial-{trial.number}",
        cfg.seed + trial.number,
        f"trial-{trial.number}",
    )


def _train_all(
    study: optuna.Study, cfg: StudyConfig, specs: list[MemberSpec], mode: str
) -> list[FrozenTrial]:
    """Train the asked trials as the populations their shared values allow; every trial ends
    told, whatever happens (a Ctrl-C fails the ones not finished, then propagates)."""
    finished: list[FrozenTrial] = []
    try:
        for members in group(specs):
            finished += _train_group(study, cfg, members, mode)
    except KeyboardInterrupt as exc:
        told = {t.number for t in finished}
        _fail_running(study, [m for m in specs if _number(m) not in told], error_text(exc))
        raise
    return finished


def _train_group(
    study: optuna.Study, cfg: StudyConfig, members: list[MemberSpec], mode: str
) -> list[FrozenTrial]:
    start = time.perf_counter()
    together = [_number(m) for m in members]
    for m in members:  # which trials trained in one Trainer (report, list, tests)
        assert m.trial is not None
        m.trial.set_user_attr(POPULATION_ATTR, together)
    try:
        results = train_population(cfg, members, wandb_mode=mode)
    except Exception as exc:  # the whole population fails; the study goes on
        for m in members:
            assert m.trial is not None
            m.trial.set_user_attr("error", error_text(exc))
        return [_tell(study, m, TrialState.FAIL) for m in members]
    seconds = time.perf_counter() - start
    told = []
    for m, result in zip(members, results, strict=True):
        assert m.trial is not None
        record_result(m.trial, result, seconds, cfg.objective.metric)  # type: ignore[arg-type]
        if result.nonfinite_at is not None:
            m.trial.set_user_attr("error", nonfinite_reason(result, cfg.objective.metric))
            told.append(_tell(study, m, TrialState.FAIL))
        elif result.pruned_at is not None:
            told.append(_tell(study, m, TrialState.PRUNED))
        else:
            told.append(_tell(study, m, TrialState.COMPLETE, result.value))
    return told


def _tell(
    study: optuna.Study, m: MemberSpec, state: TrialState, value: float | None = None
) -> FrozenTrial:
    return study.tell(m.trial, value, state=state)  # type: ignore[arg-type]


def _fail_running(study: optuna.Study, specs: list[MemberSpec], error: str) -> None:
    """Fail members that were asked but not told, with `error` recorded."""
    for m in specs:
        assert m.trial is not None
        m.trial.set_user_attr("error", error)
        study.tell(m.trial, state=TrialState.FAIL)  # type: ignore[arg-type]


def _number(m: MemberSpec) -> int:
    assert m.trial is not None
    return int(m.trial.number)
