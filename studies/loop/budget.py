"""Exactly the requested number of finished trials, however many workers share a storage.

Optuna's `MaxTrialsCallback` counts finished trials after each trial, so N workers overshoot by up
to N - 1 trials. Here a worker claims a slot before each trial under a lock that every worker of
the storage shares (a file lock beside a SQLite or journal file, a PostgreSQL advisory lock on a
server) and holds it until its next trial exists in the storage: finished plus running trials
never exceed the target. A worker with no slot left waits while other trials run, because one of
them may still fail (or die) and need a replacement.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies._compat import fail_trial
from regzoo.studies.executor.storage import MAX_RETRY, FileLock, storage_path, with_driver
from regzoo.studies.executor.trials import WORKER_ATTR, died_here, worker_id

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_S = 1.0


class _Lock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...


class TrialBudget:
    """Admit a new trial only while finished + running trials < `target`.

    Use as a context manager around `study.optimize`, with `wrap(objective)` as the objective and
    the instance itself as the last callback; call `claim()` once before `optimize`.
    """

    def __init__(self, study: optuna.Study, url: str, target: int, *, poll_s: float = POLL_S):
        self.study, self.target, self.poll_s = study, target, poll_s
        self._lock = _lock_for(url, study.study_name)
        self._held = False
        self._me = worker_id()

    def claim(self) -> bool:
        """Block until a trial may start (True, lock held) or the target is reached (False)."""
        return self.claim_slots(1) > 0

    def claim_slots(self, wanted: int, *, wait: bool = True) -> int:
        """Block until up to `wanted` trials may start (their number, lock held: a population
        claims its members' slots at once) or the target is reached (0, lock released).
        `wait=False` returns 0 at once when no slot is free now (this process's own running
        trials may be the ones to finish)."""
        while True:
            self._acquire()
            finished, running = self._counts()
            if finished >= self.target:
                self.release()
                return 0
            free = self.target - finished - running
            if free > 0:
                return min(wanted, free)
            self.release()
            if not wait:
                return 0
            time.sleep(self.poll_s)

    def reached(self) -> bool:
        """Whether the target of finished trials is reached."""
        self._acquire()
        try:
            return self._counts()[0] >= self.target
        finally:
            self.release()

    def requeue_lost(self, numbers: list[int]) -> None:
        """Fail and retry trials whose worker process died before it recorded itself on them:
        they still name this live process as their worker, so `died_here` cannot see them."""
        if not numbers:
            return
        self._acquire()
        try:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            _fail_and_requeue(self.study, [t for t in running if t.number in set(numbers)])
        finally:
            self.release()

    def wrap(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """The objective, releasing the slot lock once its trial exists in the storage."""

        def admitted(trial: optuna.Trial) -> float:
            try:
                trial.set_user_attr(WORKER_ATTR, self._me)
            finally:
                self.release()
            return objective(trial)

        return admitted

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.claim():
            study.stop()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()

    def __enter__(self) -> TrialBudget:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _acquire(self) -> None:
        if not self._held:
            self._lock.acquire()
            self._held = True

    def _counts(self) -> tuple[int, int]:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(self.study)  # RDB storages: dead workers' trials fail and re-queue
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        running = [t for t in trials if t.state == TrialState.RUNNING]
        # A dead local worker's trial fails and re-queues now, heartbeats or not: left to the
        # grace period, it stayed RUNNING (and its parameters untried) once the others finished.
        dead = [t for t in running if died_here(t)]
        if dead:
            _fail_and_requeue(self.study, dead)
        return len(trials) - len(running), len(running) - len(dead)


def _fail_and_requeue(study: optuna.Study, dead: list[FrozenTrial]) -> None:
    """What a stale heartbeat does, without waiting for it: fail, then retry the params.

    Only a trial this call fails is retried: an RDB worker's own stale-trial check (outside the
    slot lock) may fail it at the same moment, and retries it itself, as Optuna does.
    """
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for trial in dead:
        if fail_trial(study, trial):
            retry(study, trial)


@contextmanager
def storage_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the study's lock (the one trial slots are claimed under) for a read-then-write."""
    lock = _lock_for(url, study_name)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _lock_for(url: str, study_name: str) -> _Lock:
    path = storage_path(url)
    if str(path) == ":memory:":  # one process only
        return _NoLock()
    if path is not None:
        return FileLock(path.with_name(f"{path.name}.{study_name}.trials-lock"))
    return _AdvisoryLock(url, study_name)


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class _AdvisoryLock:
    """A PostgreSQL session advisory lock; the server drops it when the session ends."""

    def __init__(self, url: str, study_name: str) -> None:
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(
            with_driver(url), poolclass=sqlalchemy.pool.NullPool
        )
        digest = hashlib.blake2b(f"regzoo/{study_name}".encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "big", signed=True)
        self._conn: Any = None

    def acquire(self) -> None:
        import sqlalchemy

        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # ends the session, which releases the lock
            self._conn = None
