"""The course's experiments, each an Optuna study with a grid over the factor under test.

regzoo experiment dropout          # one experiment, in full
regzoo experiment all --quick      # every experiment, shortened (as the tests run)

`all` trains the experiments' settings together: settings of different experiments that share
the network and data train in one population (`_populations.plan_all`).

Each writes `figure.png`, `table.md` and `table.csv` under `runs/experiments/NAME/`; its trials
live in the study storage (`experiment-NAME`) and in W&B like any study's. One module per
experiment defines its settings, table and figure; adding one = one module + one line below.
"""

from __future__ import annotations

from regzoo.studies.experiments import (
    augmentation,
    capacity,
    dropout,
    early_stopping,
    initialization,
    l2,
    learning_rate,
    normalization,
    optimizers,
    weight_decay_vs_l2,
    xor,
)
from regzoo.studies.experiments._run import ExperimentResult, run_experiment, run_experiments
from regzoo.studies.experiments._spec import Experiment, Setting

# The order `all` runs them in: the lecture's order.
_MODULES = (
    xor,
    learning_rate,
    optimizers,
    initialization,
    normalization,
    l2,
    weight_decay_vs_l2,
    dropout,
    early_stopping,
    augmentation,
    capacity,
)
EXPERIMENTS: dict[str, Experiment] = {m.EXPERIMENT.name: m.EXPERIMENT for m in _MODULES}


def list_experiments() -> list[str]:
    """Experiment names in the order `all` runs them."""
    return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment called `name`; a clear error lists the names when it is unknown."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}, or all"
        )
    return EXPERIMENTS[name]


__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentResult",
    "Setting",
    "get_experiment",
    "list_experiments",
    "run_experiment",
    "run_experiments",
]
