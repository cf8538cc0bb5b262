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

import importlib
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from regzoo.studies.executor.trials import Trials
from regzoo.studies.population.members import group_key
from regzoo.studies.population.train import train_population
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import TrainFn, train_run

OnResult = Callable[[TrialSpec, RunResult], None]


@dataclass
class Job:
    """Runs trained together: a population when `batched`, else one run (one spec)."""

    specs: list[TrialSpec]
    batched: bool

    def __post_init__(self) -> None:
        if not self.batched and len(self.specs) != 1:
            raise ValueError(f"a job that does not batch trains one run, got {len(self.specs)}")

    @property
    def cost(self) -> float:
        """A rough cost, to start the largest first: the longest member's epochs, plus a
        tenth of each member's (what a member adds to a batched step)."""
        epochs = [spec.config.trainer.max_epochs for spec in self.specs]
        return max(epochs) + 0.1 * sum(epochs) if self.batched else float(sum(epochs))


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
            jobs.append(Job(chunk, batched=len(chunk) > 1))
    return jobs


def execute(
    jobs: Iterable[Job],
    *,
    wandb_mode: str = "disabled",
    workers: int = 1,
    threads: int | None = None,
    trials: Trials | None = None,
    on_result: OnResult | None = None,
    train: TrainFn = train_run,
    callbacks: Callable[[TrialSpec], list[Any]] | None = None,
) -> list[RunResult]:
    """Train `jobs`; every run's result, in the order of the jobs' specs.

    Args:
        workers: Worker processes (spawned); 1 trains here.
        threads: Torch threads of each worker process (this process's are the caller's).
        trials: The trials this process asked (used as they are here; workers open theirs).
        on_result: Called here with each run's spec and result, as the run's job ends.
        train: What trains a run on its own (a DDP leader broadcasts it first); here only.
        callbacks: Extra Lightning callbacks for a run on its own (live progress); here only.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        out: list[RunResult] = []
        for job in jobs:
            results = run_job(job, wandb_mode, trials or Trials(), train, callbacks)
            for spec, result in zip(job.specs, results, strict=True):
                if on_result is not None:
                    on_result(spec, result)
            out += results
        return out
    return _pool(jobs, wandb_mode, workers, threads, on_result)


def run_job(
    job: Job,
    wandb_mode: str,
    trials: Trials,
    train: TrainFn = train_run,
    callbacks: Callable[[TrialSpec], list[Any]] | None = None,
) -> list[RunResult]:
    """Train one job in this process. A run that raises fails (recorded and told by its
    lifecycle, its result says why); Ctrl-C fails what is left of the job and propagates."""
    specs = job.specs
    found = [trials.get(spec.trial, spec.config) for spec in specs]
    try:
        if job.batched:
            probes = [build_probes(spec) for spec in specs]
            return train_population(specs, found, probes, wandb_mode=wandb_mode)
        spec, trial = specs[0], found[0]
        extra = [*build_probes(spec), *(callbacks(spec) if callbacks else [])]
        return [train(spec, trial=trial, wandb_mode=wandb_mode, callbacks=extra)]
    finally:
        trials.forget([spec.trial for spec in specs])


def build_probes(spec: TrialSpec) -> list[Any]:
    """The probes a run's spec names, built here (in the process that trains it)."""
    ref = spec.probes
    if ref is None:
        return []
    module, _, name = ref.factory.partition(":")
    factory = getattr(importlib.import_module(module), name)
    return list(factory(ref.name, spec.config))


# ---- worker processes -------------------------------------------------------------------------


def _pool(
    jobs: list[Job], wandb_mode: str, workers: int, threads: int | None, on_result: OnResult | None
) -> list[RunResult]:
    """The jobs on `workers` spawned processes, largest first; results in the jobs' order."""
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].cost, reverse=True)
    results: dict[int, list[RunResult]] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(threads,),
    ) as pool:
        running: dict[Future[list[RunResult]], int] = {
            pool.submit(_work, jobs[i], wandb_mode): i for i in order
        }
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    results[i] = future.result()
                    for spec, result in zip(jobs[i].specs, results[i], strict=True):
                        if on_result is not None:
                            on_result(spec, result)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return [r for i in range(len(jobs)) for r in results[i]]


def _start_worker(threads: int | None) -> None:
    """A worker's process-wide settings, once: its threads, malloc, quiet training logs."""
    from regzoo.studies.loop.memory import keep_freed_memory
    from regzoo.studies.trial.console import quiet_training

    keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
    quiet_training().__enter__()  # for the worker's life: it exits with the pool


_WORKER_TRIALS = Trials()


def _work(job: Job, wandb_mode: str) -> list[RunResult]:
    return run_job(job, wandb_mode, _WORKER_TRIALS)
