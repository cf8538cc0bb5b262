"""The options of `regzoo run`, typed: what every role of a run process is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regzoo.studies.config.schema import StudyConfig

WORKER_ENV = "REGZOO_WORKER"  # "i/N" in a worker process, set by its parent


@dataclass(frozen=True)
class RunOptions:
    """The options of `regzoo run`, typed; a worker's command line is made from them."""

    config: str
    overrides: tuple[str, ...] = ()
    storage: str | None = None
    trials: int | None = None
    timeout: float | None = None
    wandb: str | None = None
    progress: bool = True
    workers: int = 1
    devices_per_trial: int | None = None
    worker: str | None = None  # "i/N": this process is worker i of N (from WORKER_ENV)
    population: int | None = None  # overrides the config's population.size

    @property
    def devices(self) -> int:
        return self.devices_per_trial or 1

    def study_args(self) -> dict[str, Any]:
        """What `run_study` takes from the options: storage, trials, timeout, W&B mode."""
        return {
            "storage": self.storage,
            "trials": self.trials,
            "timeout": self.timeout,
            "wandb": self.wandb,
            "population": self.population,
        }

    def url(self, cfg: StudyConfig) -> str:
        return self.storage or cfg.storage
