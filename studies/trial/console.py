"""What a run shows on the console: its one line when it ends, and the quiet that keeps
Lightning's and Optuna's own lines out of it while it trains."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna

from regzoo.studies.trial.spec import RunResult, TrialSpec

QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
# Hints that hold for every trial of a small model on in-memory data, not news to the user.
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*number of training batches.*",
)


@contextmanager
def quiet_training() -> Iterator[None]:
    """Within the block: no per-trial banners of Lightning, no data-loader hints, Optuna at
    WARNING (a run's own line says how it ended). Everything is restored after."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        quiet_process()
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def quiet_process() -> None:
    """`quiet_training`'s quiet for the rest of the process: a worker process's whole life
    (a held context manager would be undone at interpreter shutdown, with modules gone)."""
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def result_line(result: RunResult, spec: TrialSpec, metric: str) -> str:
    """One line for a finished run: its trial (or run name), state (as Optuna names it), value,
    test accuracy, the generalization gap, epochs and time where it trained, error, and the
    parameters it was given."""
    state = {"complete": "complete", "pruned": "pruned", "failed": "fail"}[result.state]
    colour = {"complete": "green", "pruned": "yellow", "fail": "red"}[state]
    name = f"trial {result.number:>3}" if result.number is not None else spec.run_name
    parts = [f"[{colour}]{name} {state:<8}[/]"]
    if result.state == "complete":
        parts.append(f"{metric}={result.value:.4f}")
    for key in ("test/acc", "gap/acc"):
        if key in result.metrics:
            parts.append(f"{key}={result.metrics[key]:.4f}")
    if result.epochs:
        parts += [f"epochs={result.epochs}", f"{result.seconds:.1f}s"]
    if result.error is not None:
        parts.append(f"error: {result.error}")
    params = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in spec.params.items())
    return " ".join(parts) + (f"  [dim]{params}[/]" if params else "")


def fmt_objective(metric: str, value: float) -> str:
    """An objective's value for a table cell: a parameter count whole (Optuna stores it as a
    float), anything else as `fmt` writes it."""
    return str(round(value)) if metric == "model/params" and math.isfinite(value) else fmt(value)


def fmt(value: Any) -> str:
    """A parameter or metric for a table cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
