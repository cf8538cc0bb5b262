"""What a study shows on the console when a run of it ends: its summary (the best trials, the
storage, the commands to look further), and the prefixes that keep N workers' lines apart.
A run's own line is `regzoo.studies.trial.console`'s."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, cast

from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.loop.read import TIE_BREAK_ATTR, first_value, pareto_front, ranked_trials
from regzoo.studies.loop.study import StudyOutcome
from regzoo.studies.trial import tracking
from regzoo.studies.trial.console import fmt, fmt_objective


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
    if cfg.multi_objective:
        top = pareto_front(study)
    tie = cfg.objectives[0].tie_break
    metrics = [goal.metric for goal in cfg.objectives]
    columns = ["trial", *metrics, "test/acc", "epochs", "parameters"]
    if tie:
        columns.insert(2, tie)
    table = Table(title="Pareto front" if cfg.multi_objective else "best trials")
    for col in columns:
        table.add_column(col)
    for t in top:
        cells = [
            str(t.number),
            *(fmt_objective(m, v) for m, v in zip(metrics, t.values, strict=True)),
            fmt(t.user_attrs.get("test/acc", "-")),
            str(t.user_attrs.get("epochs", "-")),
            ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items()),
        ]
        if tie:
            cells.insert(2, fmt(t.user_attrs.get(TIE_BREAK_ATTR, "-")))
        table.add_row(*cells)
    console.print(table)
    if cfg.multi_objective:
        numbers = ", ".join(str(t.number) for t in top)
        console.print(f"[bold]Pareto front[/]: trials {numbers} (export one with --trial N)")
        return
    best = top[0]
    tie_value = f"{tie}={fmt(best.user_attrs.get(TIE_BREAK_ATTR, '-'))}, " if tie else ""
    console.print(
        f"[bold]best trial[/] {best.number}: {cfg.objectives[0].metric}={first_value(best):.4f}, "
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
