"""The executor: every list of runs (a study's asked trials, `regzoo train`, an experiment's
settings, a confirmation's or an ablation's seeds) trains here, as populations where they
batch and one Trainer each where they do not, in this process or in spawned workers."""

from regzoo.studies.executor.execute import Executor, execute, plan
from regzoo.studies.executor.run import Job
from regzoo.studies.executor.trials import Trials

__all__ = ["Executor", "Job", "Trials", "execute", "plan"]
