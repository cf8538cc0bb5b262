"""How an experiment's missing grid points train: each point a trial spec of the experiment's
study, handed to the executor as one run per Trainer, or as populations (`_populations.plan_all`),
in this process or in spawned worker processes.

Either way every point is one Optuna trial of the experiment's study with the same user
attributes (`fingerprint`, `run_dir`, the probes' summaries, `diverged_at`, and what a run's
lifecycle records), so resuming, tables, figures and W&B read them alike. A point's trial is
enqueued with its grid values and asked here; its run's lifecycle tells it where it trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies._compat import ASK_HEARTBEAT_WARNING, member_heartbeats
from regzoo.studies.config.schema import ConfigError, Param, Population, StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.executor import Job, Trials, execute
from regzoo.studies.executor.pool import WorkerPool
from regzoo.studies.executor.trials import WORKER_ATTR, fail_untold, worker_id
from regzoo.studies.experiments._populations import Point, plan_all
from regzoo.studies.experiments._populations import Population as Batch
from regzoo.studies.experiments._spec import Experiment, experiment_ref, trial_params
from regzoo.studies.loop.budget import storage_lock
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.population.members import check_population, fallback_reason
from regzoo.studies.trial.console import result_line
from regzoo.studies.trial.spec import ProbeRef, RunResult, TrialRef, TrialSpec

# Enough for every grid of the course to train as one population per shared configuration.
DEFAULT_POPULATION = 64
STALE = "queued by an earlier run that stopped before training it; queued again if still missing"


def fingerprint(label: str, cfg: StudyConfig, seed: int) -> str:
    """What a stored trial must match to stand for a setting: its label, whole config and seed,
    so a trial trained before the experiment's definition changed is retrained, not reused."""
    text = json.dumps([label, cfg.model_dump(mode="json"), seed], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def grid_params(exp: Experiment, point: Point, seeds: list[int]) -> dict[str, Any]:
    """A point as the study's trial parameters: the setting's label, and its seed if several."""
    params: dict[str, Any] = {exp.factor: point.label}
    if len(seeds) > 1:
        params["seed"] = point.seed
    return params


class Grid:
    """An experiment's grid as one run trains it: the settings' configs, the seeds, the trials'
    folder and W&B mode; it asks a point's trial (`ask`) and makes the point a run (`spec`)."""

    def __init__(
        self,
        exp: Experiment,
        *,
        quick: bool,
        configs: dict[str, StudyConfig],
        seeds: list[int],
        folder: Path,
        mode: str,
        console: Console,
        storage: str,
    ) -> None:
        self.exp, self.quick, self.configs, self.seeds = exp, quick, configs, seeds
        self.folder, self.mode, self.console, self.storage = folder, mode, console, storage
        self.metric = next(iter(configs.values())).objectives[0].metric
        self.where = experiment_ref(exp)
        self.space = {exp.factor: Param.model_validate({"choice": list(configs)})}
        if len(seeds) > 1:
            self.space["seed"] = Param.model_validate({"choice": list(seeds)})

    def sampler(self) -> optuna.samplers.GridSampler:
        """The study's sampler: a grid over the settings' labels (and the seeds)."""
        grid: dict[str, list[Any]] = {self.exp.factor: list(self.configs)}
        if len(self.seeds) > 1:
            grid["seed"] = list(self.seeds)
        return optuna.samplers.GridSampler(grid, seed=0)

    def point(self, trial: optuna.Trial) -> Point:
        """The trial's point: its label and seed sampled with `suggest`, like any dimension
        (an enqueued trial gets the values it was enqueued with)."""
        values = suggest(trial, self.space)
        label = str(values[self.exp.factor])
        setting = next(s for s in self.exp.settings if s.label == label)
        return Point(setting, int(values.get("seed", self.seeds[0])))

    def ask(self, study: optuna.Study, point: Point, trials: Trials) -> TrialRef:
        """The point's trial, enqueued with its grid values and asked under the study's lock
        (another process may be asking too); checked to be the point's."""
        with storage_lock(self.storage, study.study_name), warnings.catch_warnings():
            study.enqueue_trial(grid_params(self.exp, point, self.seeds))
            warnings.filterwarnings("ignore", message=ASK_HEARTBEAT_WARNING)
            trial = study.ask()
        asked = self.point(trial)
        if (asked.label, asked.seed) != (point.label, point.seed):  # another process's queue
            study.tell(trial, state=TrialState.FAIL)
            raise RuntimeError(
                f"asked for {point.label!r} (seed {point.seed}), the study's queue gave "
                f"{asked.label!r} (seed {asked.seed}): is another process training "
                f"{study.study_name!r}?"
            )
        trial.set_user_attr(WORKER_ATTR, worker_id())
        ref = TrialRef(self.storage, study.study_name, trial.number)
        trials.add(ref, trial)
        return ref

    def spec(
        self,
        point: Point,
        *,
        params: dict[str, Any] | None = None,
        base: StudyConfig | None = None,
        batchable: bool = False,
    ) -> TrialSpec:
        """The point's run before its trial exists: its own config, over `base` (its
        population's) with `params`, or alone with its setting's keys; its seed and probes."""
        cfg = self.configs[point.label]
        own = trial_params(point.setting.keys(quick=self.quick))
        return TrialSpec(
            config=cfg,
            params=own if params is None else params,
            run_dir=self.folder,
            seed=point.seed,
            run_name=point.label,
            base=base,
            attrs={"fingerprint": fingerprint(point.label, cfg, point.seed)},
            probes=ProbeRef("regzoo.studies.experiments._spec:setting_probes", self.where),
            batchable=batchable,
        )

    def started(self, spec: TrialSpec, ref: TrialRef) -> TrialSpec:
        """The point's run once its trial is asked: its folder and run name by the trial."""
        run_dir = self.folder / f"trial-{ref.number}"
        return dataclasses.replace(
            spec,
            run_dir=run_dir,
            run_name=f"trial-{ref.number}-{spec.run_name}",
            trial=ref,
            attrs={**spec.attrs, "run_dir": str(run_dir)},
        )


# One experiment's grid, its study and the points it still has to train.
GridRun = tuple[Grid, optuna.Study, list[Point]]


def train_grids(
    runs: list[GridRun],
    population: int,
    console: Console,
    *,
    workers: int = 1,
    on_trained: Callable[[str], None] | None = None,
    pool: WorkerPool | None = None,
) -> None:
    """Train the missing points of one or more experiments: one trial per Trainer with
    `population` 1, else as the fewest populations of at most `population` members, points of
    different experiments together where their settings allow (`_populations.plan_all`).
    With `workers` > 1 that many spawned processes, each on one thread, take the jobs,
    largest first. A point's trial is asked as its job starts. `on_trained(name)` is called
    here as the last missing point of experiment `name` ends, while the others train on.
    `pool`: worker processes already started (they take the jobs instead of `workers` new
    ones)."""
    runs = [run for run in runs if run[2]]
    if not runs:
        return
    left = {grid.exp.name: len(points) for grid, _, points in runs}
    started: dict[int, str] = {}  # a started spec's experiment
    for _, study, _ in runs:
        _drain_queue(study)
    owners = {grid.exp.name: (grid, study) for grid, study, _ in runs}
    items = [(grid.exp, p) for grid, _, points in runs for p in points]
    pending: dict[int, tuple[Grid, optuna.Study, Point]] = {}

    def planned(exp: Experiment, point: Point, **kw: Any) -> TrialSpec:
        grid, study = owners[exp.name]
        spec = grid.spec(point, **kw)
        pending[id(spec)] = (grid, study, point)
        return spec

    if population <= 1:
        jobs = [Job([planned(exp, p)], batched=False) for exp, p in items]
    else:
        configs = {grid.exp.name: grid.configs for grid, _, _ in runs}
        batches = plan_all(items, configs, quick=runs[0][0].quick, size=population)
        sizes = ", ".join(str(len(b)) for b in batches)
        console.print(f"{len(items)} trials as {len(batches)} population(s): {sizes}")
        jobs = [j for b in batches for j in _jobs(b, population, console, planned)]
    workers = min(len(pool.workers) if pool is not None else workers, len(jobs))
    if pool is not None:
        pool.shrink(workers)  # started before the jobs were known: no idle process stays
    if workers > 1:
        console.print(f"{workers} worker processes")
    trials = Trials()

    def ask(spec: TrialSpec) -> TrialSpec:  # as its job starts
        grid, study, point = pending.pop(id(spec))
        run = grid.started(spec, grid.ask(study, point, trials))
        started[id(run)] = grid.exp.name
        return run

    grid = runs[0][0]

    def report(spec: TrialSpec, result: RunResult) -> None:
        console.print(result_line(result, spec, grid.metric), soft_wrap=True)
        name = started.pop(id(spec))
        left[name] -= 1
        if left[name] == 0 and on_trained is not None:
            on_trained(name)

    with contextlib.ExitStack() as beats, collect_after_trials() as collect:
        beats.enter_context(fail_untold(trials))
        for _, study in owners.values():
            beats.enter_context(member_heartbeats(study, trials.asked))
        execute(
            jobs,
            wandb_mode=grid.mode,
            workers=workers,
            pool=pool,
            threads=1,
            trials=trials,
            on_result=report,
            prepare=ask,
        )
        collect()


def _jobs(
    batch: Batch, population: int, console: Console, planned: Callable[..., TrialSpec]
) -> list[Job]:
    """A planned population as one job, or its points one job each where its config cannot
    be batched (with a one-line note)."""
    pairs = list(zip(batch.experiments, batch.points, strict=True))
    refused = _refusal(batch.cfg, population) if len(batch) > 1 else None
    if refused is not None:
        note = f"one trial per Trainer for {len(batch)}: {refused}"
        console.print(note, style="yellow", markup=False)
    if refused is not None or len(batch) == 1:
        return [Job([planned(exp, p)], batched=False) for exp, p in pairs]
    specs = [
        planned(exp, point, params=params, base=batch.cfg, batchable=True)
        for (exp, point), params in zip(pairs, batch.params, strict=True)
    ]
    return [Job(specs, batched=True)]


def _refusal(cfg: StudyConfig, size: int) -> str | None:
    """Why a population's config trains one trial per Trainer instead (one line), or None."""
    sized = cfg.model_copy(update={"population": Population(size=size)})
    try:
        check_population(sized, source=f"{cfg.name}, --population")
    except ConfigError as exc:
        return str(exc)
    return fallback_reason(sized)


def _drain_queue(study: optuna.Study) -> None:
    """Fail the trials an interrupted run left queued (WAITING), so that each population's
    `ask` gets the trials it enqueued; their points are in this run's missing ones again."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for _ in waiting:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ASK_HEARTBEAT_WARNING)
            trial = study.ask()
        trial.set_user_attr("error", STALE)
        study.tell(trial, state=TrialState.FAIL)
