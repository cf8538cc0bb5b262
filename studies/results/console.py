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
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.results import tracking
from regzoo.studies.results.read import TIE_BREAK_ATTR, ranked_trials
from regzoo.studies.trial.spec import RunResult, TrialSpec

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
    WARNING (a run's own line says how it ended). Everything is restored after."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def result_line(result: RunResult, spec: TrialSpec, metric: str) -> str:
    """One line for a finished run: its trial (or run name), state, value, test accuracy,
    epochs, time, error, and the parameters it was given."""
    colour = {"complete": "green", "pruned": "yellow", "failed": "red"}[result.state]
    name = f"trial {result.number:>3}" if result.number is not None else spec.run_name
    parts = [f"[{colour}]{name} {result.state:<8}[/]"]
    if result.state == "complete":
        parts.append(f"{metric}={result.value:.4f}")
    if "test/acc" in result.metrics:
        parts.append(f"test/acc={result.metrics['test/acc']:.4f}")
    parts += [f"epochs={result.epochs}", f"{result.seconds:.1f}s"]
    if result.error is not None:
        parts.append(f"error: {result.error}")
    params = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in spec.params.items())
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
