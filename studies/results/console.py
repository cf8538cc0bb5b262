"""What a study shows on the console: one line per trial, the summary, worker prefixes, and
the quiet that keeps Lightning's and Optuna's own lines out of it while trials run."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from regzoo.studies._compat import OPTIMIZE_LOGGER, failed_trial_number
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.results import tracking
from regzoo.studies.results.read import TIE_BREAK_ATTR, ranked_trials
from regzoo.studies.trial.train import NonFiniteObjective

QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
# Hints that hold for every trial of a small model on in-memory data, not news to the user.
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*number of training batches.*",
)


@dataclass
class StudyOutcome:
    """What a `run` of a study did: the study, how many trials were finished before, where."""

    study: optuna.Study
    already_finished: int
    storage: str
    wandb_mode: str


@contextmanager
def quiet_training() -> Iterator[None]:
    """Within the block: no per-trial banners of Lightning, no data-loader hints, Optuna at
    WARNING, and its failed-trial warnings less what is not a bug. Everything is restored after.
    """
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    verbosity = optuna.logging.get_verbosity()
    outcomes = _QuietTrialOutcomes()
    optimize_log = logging.getLogger(OPTIMIZE_LOGGER)
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optimize_log.addFilter(outcomes)
        try:
            yield
        finally:
            optimize_log.removeFilter(outcomes)
            optuna.logging.set_verbosity(verbosity)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


class _QuietTrialOutcomes(logging.Filter):
    """Optuna's warnings of failed trials, less what is not a bug.

    A diverged trial is an outcome: its warning stays, without the traceback. An interrupted
    trial is the user's Ctrl-C: both of its warnings go (the CLI prints one line instead).
    """

    def __init__(self) -> None:
        super().__init__()
        self._interrupted: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        number = failed_trial_number(record)
        if isinstance(error, KeyboardInterrupt):
            if number is not None:
                self._interrupted.add(number)
            return False
        if number is not None and number in self._interrupted:  # "...failed with value None."
            self._interrupted.discard(number)
            return False
        if isinstance(error, NonFiniteObjective):
            record.exc_info, record.exc_text = None, None
        return True


def trial_line(trial: FrozenTrial, metric: str) -> str:
    """One line for a finished trial: state, value, test accuracy, epochs and time."""
    attrs = trial.user_attrs
    state = trial.state.name.lower()
    colour = {"complete": "green", "pruned": "yellow", "fail": "red"}.get(state, "white")
    parts = [f"[{colour}]trial {trial.number:>3} {state:<8}[/]"]
    if trial.value is not None:
        parts.append(f"{metric}={trial.value:.4f}")
    if "test/acc" in attrs:
        parts.append(f"test/acc={attrs['test/acc']:.4f}")
    if "epochs" in attrs:
        parts.append(f"epochs={attrs['epochs']}")
    if "seconds" in attrs:
        parts.append(f"{attrs['seconds']:.1f}s")
    if "error" in attrs:
        parts.append(f"error: {attrs['error']}")
    params = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in trial.params.items())
    return " ".join(parts) + (f"  [dim]{params}[/]" if params else "")


def print_summary(outcome: StudyOutcome, cfg: StudyConfig, console: Console) -> None:
    """The best trial, the top trials, the storage, and the commands to look further."""
    study = outcome.study
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    console.print(
        f"\n[bold]{cfg.name}[/]: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed "
        f"({outcome.already_finished} finished before this run)"
    )
    top = ranked_trials(study)[:5]
    if not top:
        console.print("[red]no complete trial yet[/]")
        return
    tie = cfg.objective.tie_break
    columns = ["trial", cfg.objective.metric, "test/acc", "epochs", "parameters"]
    if tie:
        columns.insert(2, tie)
    table = Table(title="best trials")
    for col in columns:
        table.add_column(col)
    for t in top:
        cells = [
            str(t.number),
            f"{t.value:.4f}",
            fmt(t.user_attrs.get("test/acc", "-")),
            str(t.user_attrs.get("epochs", "-")),
            ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items()),
        ]
        if tie:
            cells.insert(2, fmt(t.user_attrs.get(TIE_BREAK_ATTR, "-")))
        table.add_row(*cells)
    console.print(table)
    best = top[0]
    tie_value = f"{tie}={fmt(best.user_attrs.get(TIE_BREAK_ATTR, '-'))}, " if tie else ""
    console.print(
        f"[bold]best trial[/] {best.number}: {cfg.objective.metric}={best.value:.4f}, "
        f"{tie_value}test/acc={fmt(best.user_attrs.get('test/acc', '-'))}"
    )
    for key, value in best.params.items():
        console.print(f"  {key}: {fmt(value)}")
    url = outcome.storage
    lines = [  # paths and commands are never wrapped, so they can be copied as they are
        f"  checkpoint: {best.user_attrs.get('checkpoint', '-')}",
        f"[bold]storage[/]   {url}",
        f"[bold]dashboard[/] make dashboard   (regzoo dashboard --storage {url})",
        f"[bold]report[/]    regzoo report {cfg.name} --storage {url}",
        f"[bold]export[/]    regzoo export {cfg.name} --format hub --storage {url}"
        "   (or pt2, onnx, ckpt)",
    ]
    if outcome.wandb_mode == "offline":
        lines.append(f"[bold]wandb[/]     offline: {tracking.sync_command(Path(cfg.runs_dir))}")
    elif outcome.wandb_mode == "online":
        lines.append(f"[bold]wandb[/]     project {cfg.wandb.project}, group {cfg.name}")
    for line in lines:
        console.print(line, soft_wrap=True)


def fmt(value: Any) -> str:
    """A parameter or metric for a table cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def worker_console(worker: str) -> Console:
    """A console whose lines start with `w<i> `, so that N workers' lines stay readable."""
    stream = _LinePrefix(sys.stdout, f"w{worker.partition('/')[0]} ")
    return Console(file=cast(IO[str], stream), soft_wrap=True)  # one trial, one line


class _LinePrefix:
    """A text stream that writes `prefix` at the start of every line."""

    def __init__(self, stream: IO[str], prefix: str) -> None:
        self.stream, self.prefix = stream, prefix
        self._line_start = True

    def write(self, text: str) -> int:
        out = []
        for line in text.splitlines(keepends=True):
            out.append(self.prefix + line if self._line_start else line)
            self._line_start = line.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()
