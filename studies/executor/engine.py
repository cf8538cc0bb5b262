"""`execute`: train a list of jobs, here or in spawned worker processes; one result per run.

    jobs = plan(specs, size=8)                      # populations where they batch
    results = execute(jobs, wandb_mode="disabled", workers=2, on_result=print_line)

A `Job` is one population (several specs trained as one batched model) or one run on its own.
Either way each run goes through its own `Lifecycle`, which records it on its Optuna trial and
tells Optuna its state as soon as the run ends, in the process that trains it: a member pruned
or stopped early is told then, not when its population ends.

Workers are fresh interpreters (`spawn`): a job travels to them as data (its specs name their
trials by address, `TrialRef`), which is what CUDA and a user's own classes need. With one
worker the jobs train in this process, one after another, with the trials it asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from regzoo.studies.executor.pool import WorkerPool
from regzoo.studies.executor.run import Job, run_job
from regzoo.studies.executor.threads import ThreadChoice, job_threads, threads_for
from regzoo.studies.executor.trials import Trials
from regzoo.studies.population.members import group_key
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import TrainFn, train_run

OnResult = Callable[[TrialSpec, RunResult], None]
LOST = "its worker process died"  # the error of each run of a job whose worker died


def plan(specs: Sequence[TrialSpec], *, size: int) -> list[Job]:
    """Specs that batch, grouped by what members of a population share (`group_key`), in
    populations of at most `size`; each other spec a job of its own. Order: first proposed."""
    if size <= 1:
        return [Job([spec], batched=False) for spec in specs]
    groups: dict[str, list[TrialSpec]] = {}
    jobs: list[Job] = []
    for spec in specs:
        if not spec.batchable:
            jobs.append(Job([spec], batched=False))
            continue
        key = group_key(spec)
        groups.setdefault(key, []).append(spec)
    for members in groups.values():
        for i in range(0, len(members), size):
            chunk = members[i : i + size]
            jobs.append(Job(chunk, batched=True))
    return jobs


class Executor:
    """Jobs in, results out, in submission order per worker: in this process (one worker:
    with the trials it asked) or on a `WorkerPool` of spawned processes.

    Args:
        workers: Worker processes; 1 trains in this process.
        threads: Torch threads of each worker process, or of this process for the jobs it
            trains (None: chosen for each job from its model's work, `threads.job_threads`).
        trials: The trials this process asked.
        train: What trains a run on its own here (a DDP leader broadcasts it first).
        callbacks: Extra Lightning callbacks for a run on its own here (live progress).
        envs: Each worker process's environment additions (its GPUs).
        prepare: Applied to each spec of a job as the job starts (its Optuna trial asked
            then, not before: a trial is only asked for a run that starts).
        pool: Workers started by the caller (before its own imports: `regzoo experiment`),
            used instead of `workers` new ones, and left to the caller to close.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        threads: int | None = None,
        wandb_mode: str = "disabled",
        trials: Trials | None = None,
        train: TrainFn = train_run,
        callbacks: Callable[[TrialSpec], list[Any]] | None = None,
        envs: Sequence[dict[str, str]] | None = None,
        prepare: Callable[[TrialSpec], TrialSpec] | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.wandb_mode, self.train, self.callbacks = wandb_mode, train, callbacks
        self.threads = threads
        self.prepare = prepare
        self.started: dict[int, Job] = {}  # the job as submitted, by id of the job as started
        self.trials = trials or Trials()
        self.queue: list[Job] = []
        self.lost: list[Job] = []  # jobs whose worker died
        self.own_pool = pool is None
        if pool is None and workers > 1:
            pool = WorkerPool(workers, threads=threads, envs=envs)
        self.pool = pool
        self.size = len(pool.workers) if pool is not None else workers

    @property
    def free(self) -> int:
        """How many more jobs would start at once."""
        running = self.pool.busy if self.pool is not None else 0
        return max(0, self.size - running - len(self.queue))

    @property
    def busy(self) -> bool:
        return bool(self.queue) or (self.pool is not None and self.pool.busy > 0)

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._dispatch()

    def wait(self) -> tuple[Job, list[tuple[TrialSpec, RunResult]]]:
        """The next job to end (as submitted) and its runs (as started) with their results; a
        job whose worker died comes back failed (its trials stay RUNNING, for the study's
        budget to re-queue)."""
        if self.pool is None:
            job = self._start(self.queue.pop(0))
            with threads_for(self._threads(job)):
                results = run_job(job, self.wandb_mode, self.trials, self.train, self.callbacks)
        else:
            job, got = self.pool.wait()
            self._dispatch()
            if got is None:
                self.lost.append(job)
                results = [_lost(spec) for spec in job.specs]
            else:
                results = got
        self.trials.forget([spec.trial for spec in job.specs])
        return self.started.pop(id(job)), list(zip(job.specs, results, strict=True))

    def _threads(self, job: Job) -> ThreadChoice:
        """This process's threads for `job`: as given, else chosen from the job's work."""
        if self.threads is not None:
            return ThreadChoice(self.threads, "as given")
        return job_threads(job.specs[0].fixed, len(job.specs))

    def _start(self, job: Job) -> Job:
        started = job
        if self.prepare is not None:
            started = Job([self.prepare(spec) for spec in job.specs], batched=job.batched)
        self.started[id(started)] = job
        return started

    def _dispatch(self) -> None:
        while self.pool is not None and self.queue and self.pool.idle:
            self.pool.submit(self._start(self.queue.pop(0)), self.wandb_mode)

    def close(self, *, interrupted: bool = False) -> None:
        """Stop the workers it started (a pool it was given is its owner's to close)."""
        if self.pool is not None and self.own_pool:
            self.pool.close(interrupted=interrupted)

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(interrupted=kind is not None and issubclass(kind, KeyboardInterrupt))


def execute(
    jobs: Iterable[Job],
    *,
    on_result: OnResult | None = None,
    **options: Any,
) -> list[RunResult]:
    """Train `jobs` (the largest first on several workers); every run's result, in the order
    of the jobs' specs. `options` are `Executor`'s; `on_result` is called here with each run's
    spec (as started) and result as its job ends. A job whose worker died fails the call once
    the others are done (their trials stay RUNNING: a rerun trains them)."""
    jobs = list(jobs)
    results: dict[int, list[RunResult]] = {}
    with Executor(**options) as executor:
        ordered = sorted(jobs, key=lambda j: j.cost, reverse=True) if executor.pool else jobs
        for job in ordered:
            executor.submit(job)
        while executor.busy:
            job, runs = executor.wait()
            results[id(job)] = [result for _, result in runs]
            for spec, result in runs:
                if on_result is not None:
                    on_result(spec, result)
        if executor.lost:
            lost = sum(len(job.specs) for job in executor.lost)
            raise RuntimeError(
                f"{len(executor.lost)} worker process(es) died; their {lost} run(s) were left "
                "unfinished: rerun to train them"
            )
    return [result for job in jobs for result in results[id(job)]]


def _lost(spec: TrialSpec) -> RunResult:
    number = spec.trial.number if spec.trial is not None else None
    return RunResult("failed", [math.nan], 0.0, 0, error=LOST, number=number)
