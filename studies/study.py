"""`run_study`: optimize a config's search space to the requested number of finished trials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from studies import tracking
from studies._budget import TrialBudget
from studies._gc import CollectAfterTrial
from studies._preflight import check_runs_dir
from studies._signals import InterruptOnce, raise_if_swallowed
from studies.config import StudyConfig
from studies.runner import count_finished, make_objective, open_study, quiet_lightning, train_run

MAX_CONSECUTIVE_FAILURES = 5


@dataclass
class StudyOutcome:
    study: optuna.Study
    already_finished: int
    storage: str
    wandb_mode: str


class _StopOnFailures:
    """Stop the study after N failures in a row: a broken config must not loop forever."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak = limit, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == TrialState.FAIL else 0
        if self.streak >= self.limit:
            study.stop()


def run_study(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    wandb: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    train: Any = train_run,
) -> StudyOutcome:
    """Run (or resume) the study until `trials` trials are finished (complete or pruned).

    Other workers may share the storage: between them they finish exactly `trials` trials.
    `train` replaces `train_run` (a DDP study broadcasts each trial's parameters first).
    """
    console = console or Console()
    quiet_lightning()
    check_runs_dir(cfg.runs_dir)  # before the storage: a refused study leaves no trace
    url = storage or cfg.storage
    target = trials or cfg.trials
    mode = tracking.resolve_mode(wandb or cfg.wandb.mode)
    study = open_study(cfg, url)
    already = count_finished(study)
    console.print(
        f"[bold]study[/] {cfg.name}: {already} of {target} trials already finished "
        f"in {url}" + ("" if already else " (new study)")
    )
    if already < target:
        budget = TrialBudget(study, url, target)
        _optimize(
            study,
            cfg,
            target,
            timeout or cfg.timeout,
            mode,
            console,
            show_progress,
            budget=budget,
            train=train,
        )
    return StudyOutcome(study=study, already_finished=already, storage=url, wandb_mode=mode)


def _optimize(
    study: optuna.Study,
    cfg: StudyConfig,
    target: int,
    timeout: float | None,
    mode: str,
    console: Console,
    show_progress: bool,
    *,
    budget: TrialBudget,
    train: Any,
) -> None:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    objective = budget.wrap(make_objective(cfg, wandb_mode=mode, progress=progress, train=train))
    done = progress.add_task("trials", total=target, completed=count_finished(study), metrics="")

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        progress.update(done, completed=count_finished(study))
        console.print(trial_line(trial, cfg.objective.metric))

    with InterruptOnce(), progress, budget:  # a 2nd Ctrl-C must not cut the 1st's record
        if not budget.claim():  # other workers finished the study meanwhile
            return
        study.optimize(
            objective,
            n_trials=None,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[
                CollectAfterTrial(),
                _StopOnFailures(MAX_CONSECUTIVE_FAILURES),
                report,
                budget,
                lambda study, trial: raise_if_swallowed(),  # after the trial is recorded
            ],
        )


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
    params = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in trial.params.items())
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
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        console.print("[red]no complete trial yet[/]")
        return
    reverse = cfg.objective.direction == "maximize"
    top = sorted(complete, key=lambda t: t.value or 0.0, reverse=reverse)[:5]
    table = Table(title="best trials")
    for col in ("trial", cfg.objective.metric, "test/acc", "epochs", "parameters"):
        table.add_column(col)
    for t in top:
        table.add_row(
            str(t.number),
            f"{t.value:.4f}",
            _fmt(t.user_attrs.get("test/acc", "-")),
            str(t.user_attrs.get("epochs", "-")),
            ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()),
        )
    console.print(table)
    best = top[0]
    console.print(
        f"[bold]best trial[/] {best.number}: {cfg.objective.metric}={best.value:.4f}, "
        f"test/acc={_fmt(best.user_attrs.get('test/acc', '-'))}"
    )
    for key, value in best.params.items():
        console.print(f"  {key}: {_fmt(value)}")
    url = outcome.storage
    lines = [  # paths and commands are never wrapped, so they can be copied as they are
        f"  checkpoint: {best.user_attrs.get('checkpoint', '-')}",
        f"[bold]storage[/]   {url}",
        f"[bold]dashboard[/] make dashboard   (python -m studies dashboard --storage {url})",
        f"[bold]report[/]    python -m studies report {cfg.name} --storage {url}",
        f"[bold]export[/]    python -m studies export {cfg.name} --format onnx --storage {url}",
    ]
    if outcome.wandb_mode == "offline":
        lines.append(f"[bold]wandb[/]     offline: {tracking.sync_command(Path(cfg.runs_dir))}")
    elif outcome.wandb_mode == "online":
        lines.append(f"[bold]wandb[/]     project {cfg.wandb.project}, group {cfg.name}")
    for line in lines:
        console.print(line, soft_wrap=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
