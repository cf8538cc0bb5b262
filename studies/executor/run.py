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

from regzoo.studies.executor.trials import Trials
from regzoo.studies.population.train import train_population
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import TrainFn, train_run


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
