"""The executor: every list of runs (a study's asked trials, `regzoo train`, an experiment's
settings, a confirmation's or an ablation's seeds) trains here, as populations where they
batch and one Trainer each where they do not, in this process or in spawned workers.

Its names are imported on first use (PEP 562): a light submodule (`pool`, `memory`, which the
CLI needs before it has imported torch) loads no torch through this package."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regzoo.studies.executor.engine import Executor, execute, plan
    from regzoo.studies.executor.run import Job
    from regzoo.studies.executor.trials import Trials

__all__ = ["Executor", "Job", "Trials", "execute", "plan"]

_MODULES = {"Executor": "engine", "execute": "engine", "plan": "engine", "Job": "run"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES.get(name, 'trials')}")
    return getattr(module, name)
