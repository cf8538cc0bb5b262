"""Run an experiment as an Optuna study (grid sampler over its settings), then write its table
and figure under `runs/experiments/NAME/`.

Every setting is trained with the same seed(s), so the settings differ only in the factor under
test: the same data split, the same batches and, where shapes agree, the same initial weights.
Rerunning resumes: settings already finished in the storage are read back, not retrained.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo.studies.config.load import validate_config
from regzoo.studies.config.schema import Param, StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.experiments._plots import save_png
from regzoo.studies.experiments._spec import (
    Experiment,
    ExperimentRun,
    Row,
    Setting,
    TrialRecord,
    read_curves,
    trial_params,
)
from regzoo.studies.experiments._tables import print_table, write_table
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.loop.storage import open_storage
from regzoo.studies.loop.study import ensure_uid, study_uid
from regzoo.studies.results import tracking
from regzoo.studies.results.console import quiet_training, trial_line
from regzoo.studies.results.wandb_study import log_experiment, print_written
from regzoo.studies.trial.objective import run_trial
from regzoo.studies.trial.train import NonFiniteObjective, TrialResult


@dataclass
class ExperimentResult:
    """What `run_experiment` produced: the rows of its table and the files it wrote."""

    name: str
    rows: list[Row]
    figure: Path
    table: Path
    run: ExperimentRun
    seconds: float


def run_experiment(
    exp: Experiment,
    *,
    quick: bool = False,
    storage: str | None = None,
    wandb: str | None = None,
    console: Console | None = None,
) -> ExperimentResult:
    """Train the settings not yet finished in the storage, then write the table and figure."""
    threads = torch.get_num_threads()
    # The networks are tiny: intra-op threads cost more in synchronisation than they save
    # (5x slower on a busy 2-core machine), so each trial runs on one thread.
    torch.set_num_threads(1)
    try:
        with quiet_training():
            return _run(exp, quick, storage, wandb, console or Console())
    finally:
        torch.set_num_threads(threads)


def _run(
    exp: Experiment, quick: bool, storage: str | None, wandb: str | None, console: Console
) -> ExperimentResult:
    start = time.perf_counter()
    settings, seeds = exp.chosen(quick=quick), exp.replicates(quick=quick)
    configs = {s.label: _config(exp, s, quick) for s in settings}
    head = next(iter(configs.values()))
    url = storage or head.storage
    mode = tracking.resolve_mode(wandb or head.wandb.mode)
    out_dir = Path(head.runs_dir) / "experiments" / (exp.name + ("-quick" if quick else ""))
    sampler = optuna.samplers.GridSampler(_grid(settings, exp.factor, seeds), seed=0)
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=exp.study_name(quick=quick),
        direction=head.objective.direction,
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    ensure_uid(study, url)
    console.print(f"[bold]experiment[/] {exp.name}: {exp.title} ({url})")
    objective = _objective(exp, quick, settings, seeds, configs, out_dir / study_uid(study), mode)
    _train_missing(study, objective, exp.factor, configs, seeds, console)
    run = ExperimentRun(exp, quick, out_dir, _records(study, settings, configs, seeds))
    rows, figure, table = _write(run, console)
    save_dir = out_dir / study_uid(study)
    found = log_experiment(
        study,
        mode=mode,
        project=head.wandb.project,
        entity=head.wandb.entity,
        save_dir=save_dir,
        figure=figure,
        rows=rows,
        title=exp.title,
        console=console,
    )
    print_written(found, mode, save_dir, console)
    seconds = time.perf_counter() - start
    console.print(f"figure: {figure}  table: {table}  ({seconds:.0f} s)")
    if mode == "offline":
        console.print(f"wandb offline runs: {tracking.sync_command(Path(head.runs_dir))}")
    return ExperimentResult(exp.name, rows, figure, table, run, seconds)


def _write(run: ExperimentRun, console: Console) -> tuple[list[Row], Path, Path]:
    """The table (CSV and markdown, also printed) and the figure of the finished trials."""
    rows = run.experiment.table(run)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    figure = run.out_dir / "figure.png"
    save_png(run.experiment.figure(run, rows), figure)
    table = write_table(rows, run.out_dir / "table")
    print_table(rows, run.experiment.title, console)
    return rows, figure, table


def _train_missing(
    study: optuna.Study,
    objective: Any,
    factor: str,
    configs: dict[str, StudyConfig],
    seeds: list[int],
    console: Console,
) -> None:
    """Train the grid points without a finished trial: never tried, failed for another reason
    than divergence, or trained by an older definition of the experiment. Each is enqueued, so
    the points are exactly the missing ones (the grid sampler would pick among every point it
    counts as unvisited, a diverged one included)."""
    metric = next(iter(configs.values())).objective.metric

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        console.print(trial_line(trial, metric))

    missing = _missing(study, factor, configs, seeds)
    if not missing:
        return
    for params in missing:
        study.enqueue_trial(params)
    with collect_after_trials() as collect:
        study.optimize(
            objective,
            n_trials=len(missing),
            callbacks=[collect, report],
            catch=(NonFiniteObjective,),
        )


def _config(exp: Experiment, setting: Setting, quick: bool) -> StudyConfig:
    source = f"experiment {exp.name!r}, setting {setting.label!r}"
    return validate_config(exp.raw_config(setting, quick=quick), source=source)


def _grid(settings: list[Setting], factor: str, seeds: list[int]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {factor: [s.label for s in settings]}
    if len(seeds) > 1:
        grid["seed"] = seeds
    return grid


def _fingerprint(label: str, cfg: StudyConfig, seed: int) -> str:
    """What a stored trial must match to stand for a setting: its label, whole config and seed,
    so a trial trained before the experiment's definition changed is retrained, not reused."""
    text = json.dumps([label, cfg.model_dump(mode="json"), seed], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _objective(
    exp: Experiment,
    quick: bool,
    settings: list[Setting],
    seeds: list[int],
    configs: dict[str, StudyConfig],
    folder: Path,
    mode: str,
) -> Any:
    """The studies' objective (`run_trial`) over the grid of settings and seeds: a setting's
    label and seed are sampled with `suggest`, like any search dimension."""
    by_label = {s.label: s for s in settings}
    space = {exp.factor: Param.model_validate({"choice": list(by_label)})}
    if len(seeds) > 1:
        space["seed"] = Param.model_validate({"choice": list(seeds)})

    def objective(trial: optuna.Trial) -> float:
        point = suggest(trial, space)
        label, seed = str(point[exp.factor]), int(point.get("seed", seeds[0]))
        setting, cfg = by_label[label], configs[label]
        probes = exp.probes(cfg)
        run_dir = folder / f"trial-{trial.number}"

        def attrs(result: TrialResult) -> dict[str, Any]:
            extra: dict[str, Any] = {"fingerprint": _fingerprint(label, cfg, seed)}
            extra["run_dir"] = str(run_dir)
            for probe in probes:
                extra.update(getattr(probe, "summary", dict)())
            if result.nonfinite_at is not None:
                extra["diverged_at"] = result.nonfinite_at + 1
            return extra

        return run_trial(
            trial,
            cfg,
            trial_params(setting.keys(quick=quick)),
            run_dir,
            seed=seed,
            wandb_mode=mode,
            run_name=f"trial-{trial.number}-{label}",
            callbacks=probes,
            extra_attrs=attrs,
        )

    return objective


def _finished(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The latest finished trial of each fingerprint: complete, or failed by diverging (a
    result the lecture's tables show, not an error to retry)."""
    latest: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        key = t.user_attrs.get("fingerprint")
        diverged = "diverged_at" in t.user_attrs
        if isinstance(key, str) and (t.state == TrialState.COMPLETE or diverged):
            latest[key] = t
    return latest


def _missing(
    study: optuna.Study, factor: str, configs: dict[str, StudyConfig], seeds: list[int]
) -> list[dict[str, Any]]:
    """The grid points (as trial parameters) without a complete trial."""
    done = _finished(study)
    missing = []
    for label, cfg in configs.items():
        for seed in seeds:
            if _fingerprint(label, cfg, seed) not in done:
                params: dict[str, Any] = {factor: label}
                if len(seeds) > 1:
                    params["seed"] = seed
                missing.append(params)
    return missing


def _records(
    study: optuna.Study, settings: list[Setting], configs: dict[str, StudyConfig], seeds: list[int]
) -> list[TrialRecord]:
    done = _finished(study)
    records = []
    for s in settings:
        for seed in seeds:
            t = done[_fingerprint(s.label, configs[s.label], seed)]
            run_dir = Path(t.user_attrs["run_dir"])
            curves = read_curves(run_dir / "metrics.csv")
            records.append(TrialRecord(s, seed, t.number, run_dir, dict(t.user_attrs), curves))
    return records
