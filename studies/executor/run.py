"""A job, and how one is trained in this process: what the executor does with a job, here or in
a worker.

`run_job` trains a population or a run on its own with the trials it finds in `trials` (the
asker's own objects here, or opened by address in a worker), the probes its specs name built
here; `settle_worker` makes a worker process's process-wide settings once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from regzoo.studies.executor.threads import config_work
from regzoo.studies.executor.trials import Trials
from regzoo.studies.population.train import train_population
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import TrainFn, train_run

# A job's cost in estimated seconds, one thread on the 2-core VM, fitted to the jobs of
# `regzoo experiment all` (2026-12-07; within 10% of each of the 12 jobs' 1.7-25 s, except
# the capacity populations, whose members differ in width): a lone run's Trainer spends ~6 ms
# an epoch of its own (its validation loop, logging, the kept checkpoint), a population ~2.4
# ms an epoch for all its members; a member's epoch costs ~4.7e-8 s a multiply-add of its
# forward pass over one sample (how many samples an epoch holds is not known before the data
# is loaded, so it is taken alike for every job).
LONE_EPOCH_S = 6e-3
POPULATION_EPOCH_S = 2.4e-3
MEMBER_EPOCH_S_PER_MAC = 4.7e-8


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
        """A rough cost in seconds, to start the largest first: the Trainer's own work an
        epoch, over the longest member's epochs, and each member's epochs of its model's
        multiply-adds (`threads.config_work`; none counted for a model of the user's that
        it cannot measure)."""
        epochs = [spec.config.trainer.max_epochs for spec in self.specs]
        macs, _ = config_work(self.specs[0].fixed)
        own = (POPULATION_EPOCH_S if self.batched else LONE_EPOCH_S) * max(epochs)
        return own + MEMBER_EPOCH_S_PER_MAC * (macs or 0) * sum(epochs)


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
    if job.batched:
        probes = [build_probes(spec) for spec in specs]
        return train_population(specs, found, probes, wandb_mode=wandb_mode)
    spec, trial = specs[0], found[0]
    extra = [*build_probes(spec), *(callbacks(spec) if callbacks else [])]
    return [train(spec, trial=trial, wandb_mode=wandb_mode, callbacks=extra)]


def build_probes(spec: TrialSpec) -> list[Any]:
    """The probes a run's spec names, built here (in the process that trains it)."""
    ref = spec.probes
    if ref is None:
        return []
    module, _, name = ref.factory.partition(":")
    factory = getattr(importlib.import_module(module), name)
    return list(factory(ref.name, spec.config))


def settle_worker(threads: int | None) -> None:
    """A worker process's process-wide settings, once: its threads, malloc, quiet logs."""
    import lightning.pytorch  # noqa: F401  its loggers' levels are set on import: ours after

    from regzoo.studies.executor.memory import keep_freed_memory
    from regzoo.studies.trial.console import quiet_process

    keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
    quiet_process()
