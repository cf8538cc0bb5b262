"""Run an experiment as an Optuna study (grid sampler over its settings), then write its table
and figure under `runs/experiments/NAME/`.

Every setting is trained with the same seed(s), so the settings differ only in the factor under
test: the same data split, the same batches and, where shapes agree, the same initial weights.
The settings that may share a batched model train as populations (`_populations`), the others
one per Trainer; `population=1` trains every one in its own Trainer.
Rerunning resumes: settings already finished in the storage are read back, not retrained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo.studies.config.load import validate_config
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.executor.pool import WorkerPool
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.experiments._plots import save_png
from regzoo.studies.experiments._populations import Point
from regzoo.studies.experiments._spec import (
    Experiment,
    ExperimentRun,
    Row,
    Setting,
    TrialRecord,
    read_curves,
)
from regzoo.studies.experiments._tables import print_table, write_table
from regzoo.studies.experiments._train import DEFAULT_POPULATION, Grid, fingerprint, train_grids
from regzoo.studies.loop.study import ensure_uid, study_uid
from regzoo.studies.results.wandb_study import log_experiment, print_written
from regzoo.studies.trial import tracking
from regzoo.studies.trial.console import quiet_training
from regzoo.studies.trial.lifecycle import DIVERGED_ATTR


@dataclass
class ExperimentResult:
    """What `run_experiment` produced: the rows of its table and the files it wrote."""

    name: str
    rows: list[Row]
    figure: Path
    table: Path
    run: ExperimentRun
    seconds: float


@dataclass
class _Prepared:
    """One experiment opened for a run: its study, grid and the points still to train."""

    exp: Experiment
    quick: bool
    study: optuna.Study
    grid: Grid
    settings: list[Setting]
    configs: dict[str, StudyConfig]
    seeds: list[int]
    head: StudyConfig
    mode: str
    out_dir: Path
    missing: list[Point]
    start: float


def run_experiment(
    exp: Experiment,
    *,
    quick: bool = False,
    storage: str | None = None,
    wandb: str | None = None,
    population: int | None = None,
    console: Console | None = None,
) -> ExperimentResult:
    """Train the settings not yet finished in the storage, then write the table and figure.

    Args:
        population: The most trials one population trains at once (default
            `DEFAULT_POPULATION`; 1: each trial in its own Trainer, through `train_run`).
    """
    [result] = run_experiments(
        [exp], quick=quick, storage=storage, wandb=wandb, population=population, console=console
    )
    return result


def run_experiments(
    experiments: list[Experiment],
    *,
    quick: bool = False,
    storage: str | None = None,
    wandb: str | None = None,
    population: int | None = None,
    workers: int = 1,
    pool: WorkerPool | None = None,
    console: Console | None = None,
) -> list[ExperimentResult]:
    """`run_experiment` for several experiments at once: their missing settings train
    together, settings of different experiments in one population where they share the
    network and data (`regzoo experiment all`); each writes its table and figure as soon as
    its own settings are trained, while the others' train on.
    A result's `seconds` run from the start to its table.

    Args:
        workers: Processes training populations side by side (each on one thread).
        pool: Those processes, already started with one thread each (`regzoo experiment`
            starts them first, so that their imports overlap its own); the caller closes it.
    """
    size = DEFAULT_POPULATION if population is None else population
    console = console or Console()
    threads = torch.get_num_threads()
    # The networks are tiny: intra-op threads cost more in synchronisation than they save
    # (5x slower on a busy 2-core machine), so each trial runs on one thread.
    torch.set_num_threads(1)
    try:
        with quiet_training():
            prepared = {
                exp.name: _prepare(exp, quick, storage, wandb, console) for exp in experiments
            }
            finished: dict[str, ExperimentResult] = {}

            def finish(name: str) -> None:  # as its last point ends: the others train on
                finished[name] = _finish(prepared[name], console)

            for name, p in prepared.items():
                if not p.missing:
                    finish(name)
            runs = [(p.grid, p.study, p.missing) for p in prepared.values()]
            train_grids(runs, size, console, workers=workers, on_trained=finish, pool=pool)
            return [finished[exp.name] for exp in experiments]
    finally:
        torch.set_num_threads(threads)


def _prepare(
    exp: Experiment, quick: bool, storage: str | None, wandb: str | None, console: Console
) -> _Prepared:
    start = time.perf_counter()
    settings, seeds = exp.chosen(quick=quick), exp.replicates(quick=quick)
    configs = {s.label: _config(exp, s, quick) for s in settings}
    head = next(iter(configs.values()))
    url = storage or head.storage
    mode = tracking.resolve_mode(wandb or head.wandb.mode)
    out_dir = Path(head.runs_dir) / "experiments" / (exp.name + ("-quick" if quick else ""))
    grid = Grid(
        exp, quick=quick, configs=configs, seeds=seeds, folder=out_dir, mode=mode,
        console=console, storage=url,
    )  # fmt: skip
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=exp.study_name(quick=quick),
        direction=head.objectives[0].direction,
        sampler=grid.sampler(),
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    ensure_uid(study, url)
    grid.folder = out_dir / study_uid(study)
    console.print(f"[bold]experiment[/] {exp.name}: {exp.title} ({url})")
    missing = _missing(study, settings, configs, seeds)
    return _Prepared(
        exp, quick, study, grid, settings, configs, seeds, head, mode, out_dir, missing, start
    )


def _finish(p: _Prepared, console: Console) -> ExperimentResult:
    """Read the experiment's finished trials back; write, print and log its table and figure."""
    records = _records(p.study, p.settings, p.configs, p.seeds)
    run = ExperimentRun(p.exp, p.quick, p.out_dir, records)
    rows, figure, table = _write(run, console)
    save_dir = p.out_dir / study_uid(p.study)
    found = log_experiment(
        p.study,
        mode=p.mode,
        project=p.head.wandb.project,
        entity=p.head.wandb.entity,
        save_dir=save_dir,
        figure=figure,
        rows=rows,
        title=p.exp.title,
        console=console,
    )
    print_written(found, p.mode, save_dir, console)
    seconds = time.perf_counter() - p.start
    console.print(f"figure: {figure}  table: {table}  ({seconds:.0f} s)")
    if p.mode == "offline":
        console.print(f"wandb offline runs: {tracking.sync_command(Path(p.head.runs_dir))}")
    return ExperimentResult(p.exp.name, rows, figure, table, run, seconds)


def _write(run: ExperimentRun, console: Console) -> tuple[list[Row], Path, Path]:
    """The table (CSV and markdown, also printed) and the figure of the finished trials."""
    rows = run.experiment.table(run)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    figure = run.out_dir / "figure.png"
    save_png(run.experiment.figure(run, rows), figure)
    table = write_table(rows, run.out_dir / "table")
    print_table(rows, run.experiment.title, console)
    return rows, figure, table


def _config(exp: Experiment, setting: Setting, quick: bool) -> StudyConfig:
    source = f"experiment {exp.name!r}, setting {setting.label!r}"
    return validate_config(exp.raw_config(setting, quick=quick), source=source)


def _finished(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The latest finished trial of each fingerprint: complete, or failed by diverging (a
    result the lecture's tables show, not an error to retry)."""
    latest: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        key = t.user_attrs.get("fingerprint")
        diverged = DIVERGED_ATTR in t.user_attrs
        if isinstance(key, str) and (t.state == TrialState.COMPLETE or diverged):
            latest[key] = t
    return latest


def _missing(
    study: optuna.Study, settings: list[Setting], configs: dict[str, StudyConfig], seeds: list[int]
) -> list[Point]:
    """The grid points without a finished trial: never tried, failed for another reason than
    divergence, or trained by an older definition of the experiment."""
    done = _finished(study)
    return [
        Point(s, seed)
        for s in settings
        for seed in seeds
        if fingerprint(s.label, configs[s.label], seed) not in done
    ]


def _records(
    study: optuna.Study, settings: list[Setting], configs: dict[str, StudyConfig], seeds: list[int]
) -> list[TrialRecord]:
    done = _finished(study)
    records = []
    for s in settings:
        for seed in seeds:
            t = done[fingerprint(s.label, configs[s.label], seed)]
            run_dir = Path(t.user_attrs["run_dir"])
            curves = read_curves(run_dir / "metrics.csv")
            records.append(TrialRecord(s, seed, t.number, run_dir, dict(t.user_attrs), curves))
    return records
