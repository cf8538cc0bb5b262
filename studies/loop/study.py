"""`run_study`: optimize a config's search space to the requested number of finished trials.

    outcome = run_study(load_config("studies/configs/default.yaml"), trials=5, wandb="disabled")

A study's trial folders are `runs_dir/<study>/<study id>/trial-<n>/`: the id is drawn once, when
the study is created, and stored with it, so two storages that hold a study of the same name
never write into (or clear) each other's folders.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from regzoo.studies._compat import ASK_HEARTBEAT_WARNING, member_heartbeats
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.executor import Executor, Trials, plan
from regzoo.studies.executor.engine import LOST
from regzoo.studies.executor.samplers import make_pruner, make_sampler
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.executor.threads import ThreadChoice, choose_threads, fixed_work, threads_for
from regzoo.studies.executor.trials import WORKER_ATTR, fail_untold, worker_id
from regzoo.studies.loop.budget import FINISHED, TrialBudget, storage_lock
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.loop.preflight import check_runs_dir
from regzoo.studies.population.members import with_population
from regzoo.studies.trial import tracking
from regzoo.studies.trial.callbacks import EpochProgress
from regzoo.studies.trial.console import quiet_training, result_line
from regzoo.studies.trial.signals import InterruptOnce, raise_if_swallowed
from regzoo.studies.trial.spec import TrialRef, TrialSpec
from regzoo.studies.trial.train import TrainFn, train_run

MAX_CONSECUTIVE_FAILURES = 5
UID_ATTR = "uid"  # the study's own id: the folder of its trials under runs_dir/<study>/
PROCESSES_ATTR = "processes"  # how many processes have run the study: each one's sampler seed


@dataclass
class StudyOutcome:
    """What a `run` of a study did: the study, how many trials were finished before, where."""

    study: optuna.Study
    already_finished: int
    storage: str
    wandb_mode: str


def open_study(cfg: StudyConfig, url: str) -> optuna.Study:
    """Create the study, or load it to resume; the directions must match a stored study's (a
    list of objectives opens a multi-objective study, one per objective)."""
    storage = open_storage(url)
    directions = [goal.direction for goal in cfg.objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.name,
        directions=directions,
        pruner=make_pruner(cfg),
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise ValueError(
            f"study {cfg.name!r} in {url} was created to {', '.join(stored)}, the config asks "
            f"to {', '.join(directions)}"
        )
    ensure_uid(study, url)
    if study.user_attrs.get("objective") != cfg.objectives[0].metric:  # for report and dashboard
        study.set_user_attr("objective", cfg.objectives[0].metric)
    config = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    if study.user_attrs.get("config") != config:  # the latest run's: model cards, W&B
        study.set_user_attr("config", config)
    return study


def ensure_uid(study: optuna.Study, url: str) -> None:
    """Give a new study its id (`UID_ATTR`), under the study's lock, so that processes creating
    it at once agree on one."""
    if UID_ATTR not in study.user_attrs:
        with storage_lock(url, study.study_name):
            if UID_ATTR not in study.user_attrs:  # read from the storage again, under the lock
                study.set_user_attr(UID_ATTR, uuid.uuid4().hex[:8])


def study_folder(study: optuna.Study, runs_dir: str | Path) -> Path:
    """`runs_dir/<study>/<study id>/`: where this study's trials keep their files."""
    return Path(runs_dir) / study.study_name / study_uid(study)


def study_uid(study: optuna.Study) -> str:
    """The id `ensure_uid` gave the study."""
    return str(study.user_attrs[UID_ATTR])


def claim_sampler_seed(study: optuna.Study, url: str, seed: int | None) -> int | None:
    """The sampler seed of this process: the config's for the study's first process, then one
    derived from (config seed, process number) for each later one, so that workers (on this
    machine or another) never draw the same parameters. Storage- and machine-independent: the
    same config and seed sample the same trials on SQLite, a journal file or PostgreSQL."""
    if seed is None:
        return None
    with storage_lock(url, study.study_name):
        number = int(study.user_attrs.get(PROCESSES_ATTR, 0))  # read under the lock
        study.set_user_attr(PROCESSES_ATTR, number + 1)
    if number == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    wandb: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
    train: TrainFn = train_run,
    population: int | None = None,
    workers: int = 1,
    envs: list[dict[str, str]] | None = None,
) -> StudyOutcome:
    """Run (or resume) the study until `trials` trials are finished (complete or pruned).

    Other processes may share the storage: between them they finish exactly `trials` trials.
    `train` replaces `train_run` (a DDP study broadcasts each trial's parameters first).
    `population` overrides the config's `population.size` (1: one trial per Trainer).
    `workers` > 1 trains that many jobs at a time in spawned worker processes (`envs`: each
    one's environment additions, such as its GPUs).
    """
    console = console or Console()
    cfg, note = with_population(cfg, population, distributed=train is not train_run)
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
    if note:
        console.print(f"[yellow]population:[/] {note}", soft_wrap=True)
    threads = study_threads(cfg, workers=workers)
    size = cfg.population.size
    console.print(
        f"[bold]threads[/] {threads.threads} ({threads.reason})"
        + (f"  [bold]population[/] {size} trials per Trainer" if size > 1 else ""),
        soft_wrap=True,
    )
    if already < target:
        study.sampler = make_sampler(cfg, seed=claim_sampler_seed(study, url, cfg.sampler.seed))
        options = _Options(
            timeout or cfg.timeout, mode, show_progress, train, workers, threads.threads, envs
        )
        with threads_for(threads), quiet_training():
            _optimize(study, cfg, url, target, options, console)
    return StudyOutcome(study=study, already_finished=already, storage=url, wandb_mode=mode)


@dataclass(frozen=True)
class _Options:
    """How `_optimize` trains: its deadline, W&B mode, progress bars and executor."""

    timeout: float | None
    mode: str
    show_progress: bool
    train: TrainFn
    workers: int
    threads: int
    envs: list[dict[str, str]] | None


def study_threads(cfg: StudyConfig, *, workers: int = 1) -> ThreadChoice:
    """The torch threads a study's trials train with (`executor.threads`), from its fixed model."""
    macs, batch_size = fixed_work(cfg)
    return choose_threads(
        macs_per_sample=macs,
        batch_size=batch_size,
        population=cfg.population.size,
        workers=workers,
    )


def _optimize(
    study: optuna.Study,
    cfg: StudyConfig,
    url: str,
    target: int,
    options: _Options,
    console: Console,
) -> None:
    """Ask trials and hand them to the executor until the budget is spent, `timeout` seconds
    have passed (nothing new starts after it), or `MAX_CONSECUTIVE_FAILURES` failed in a row.

    Whenever a worker is free, up to `population.size` slots are claimed under the study's
    lock, that many trials asked (TPE's constant liar keeps them apart) and trained as
    populations where they batch. Every run is told by its own lifecycle, where it trains; a
    trial asked and never told (Ctrl-C, an error before it trained) is failed here.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=not options.show_progress or options.workers > 1,
        transient=False,
    )
    folder = study_folder(study, cfg.runs_dir)
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    tasks: dict[str, Any] = {}  # a run on its own's live progress, by run name
    streak = 0
    started = False  # whether a job was submitted

    def live(spec: TrialSpec) -> list[Any]:
        epochs = int(spec.params.get("trainer.max_epochs", cfg.trainer.max_epochs))
        tasks[spec.run_name] = progress.add_task(
            spec.run_name.replace("-", " "), total=epochs, metrics=""
        )
        return [
            EpochProgress(progress, tasks[spec.run_name], (cfg.objectives[0].metric, "val/loss"))
        ]

    trials = Trials()
    executor = Executor(
        workers=options.workers,
        threads=options.threads,
        wandb_mode=options.mode,
        trials=trials,
        train=options.train,
        callbacks=live,
        envs=options.envs,
    )
    budget = TrialBudget(study, url, target)
    # The executor closes first: its workers fail and tell their own runs, then what is left.
    with InterruptOnce(), progress, budget, fail_untold(trials), executor:
        done = progress.add_task(
            "trials", total=target, completed=count_finished(study), metrics=""
        )
        with member_heartbeats(study, trials.asked), collect_after_trials() as collect:
            while True:
                # As Optuna's timeout: checked after each trial, so a study starts at least one.
                open_ = deadline is None or time.monotonic() < deadline or not started
                while open_ and executor.free and streak < MAX_CONSECUTIVE_FAILURES:
                    wanted = budget.claim_slots(cfg.population.size, wait=not executor.busy)
                    if not wanted:
                        break
                    try:
                        specs = [_ask(study, cfg, url, folder, trials) for _ in range(wanted)]
                    finally:
                        budget.release()
                    for job in plan(specs, size=cfg.population.size):
                        executor.submit(job)
                    started = True
                if not executor.busy:
                    return
                _, runs = executor.wait()
                budget.requeue_lost(
                    [s.trial.number for s, r in runs if r.error == LOST and s.trial is not None]
                )
                for spec, result in runs:
                    streak = streak + 1 if result.state == "failed" else 0
                    if spec.run_name in tasks:
                        progress.remove_task(tasks.pop(spec.run_name))
                    progress.update(done, completed=count_finished(study))
                    console.print(
                        result_line(result, spec, cfg.objectives[0].metric), soft_wrap=True
                    )
                collect()
                raise_if_swallowed()  # a Ctrl-C a finalizer swallowed, after the trials are told


def _ask(
    study: optuna.Study, cfg: StudyConfig, url: str, folder: Path, trials: Trials
) -> TrialSpec:
    """Ask trial n: its sampled parameters, `folder/trial-<n>`, seed `cfg.seed + n`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ASK_HEARTBEAT_WARNING)
        trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_id())
    ref = TrialRef(url, study.study_name, trial.number)
    trials.add(ref, trial)
    return TrialSpec(
        config=cfg,
        params=suggest(trial, cfg.search),
        run_dir=folder / f"trial-{trial.number}",
        seed=cfg.seed + trial.number,
        run_name=f"trial-{trial.number}",
        trial=ref,
    )
