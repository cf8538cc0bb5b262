"""How an experiment's missing grid points train: one trial per Trainer (`run_trial`, through
`study.optimize`), or as populations (`_populations.plan`) in one Trainer each.

Either way every point is one Optuna trial of the experiment's study with the same user
attributes (`fingerprint`, `run_dir`, the probes' summaries, `diverged_at`, and what
`record_result` records), so resuming, tables, figures and W&B read them alike. A population's
members are enqueued, asked and told by hand: their trials run while the population trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo.studies._compat import ASK_HEARTBEAT_WARNING, member_heartbeats
from regzoo.studies.config.schema import ConfigError, Param, Population, StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.experiments._populations import Point, plan_all
from regzoo.studies.experiments._populations import Population as Batch
from regzoo.studies.experiments._spec import Experiment, trial_params
from regzoo.studies.loop.budget import storage_lock
from regzoo.studies.loop.gc import collect_after_trials
from regzoo.studies.loop.storage import open_storage
from regzoo.studies.loop.threads import usable_cores
from regzoo.studies.population.members import MemberSpec, check_population, fallback_reason
from regzoo.studies.population.train import train_population
from regzoo.studies.results.console import trial_line
from regzoo.studies.trial.objective import record_result, run_trial
from regzoo.studies.trial.train import NonFiniteObjective, TrialResult, error_text

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
    folder and W&B mode; it trains points one per Trainer (`train_singly`) and makes a point a
    population's member (`member_spec`, `tell`; `train_grids` trains the populations)."""

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
        storage: str | None = None,
    ) -> None:
        self.exp, self.quick, self.configs, self.seeds = exp, quick, configs, seeds
        self.folder, self.mode, self.console, self.storage = folder, mode, console, storage
        self.metric = next(iter(configs.values())).objective.metric
        self.space = {exp.factor: Param.model_validate({"choice": list(configs)})}
        if len(seeds) > 1:
            self.space["seed"] = Param.model_validate({"choice": list(seeds)})

    def sampler(self) -> optuna.samplers.GridSampler:
        """The study's sampler: a grid over the settings' labels (and the seeds)."""
        grid: dict[str, list[Any]] = {self.exp.factor: list(self.configs)}
        if len(self.seeds) > 1:
            grid["seed"] = list(self.seeds)
        return optuna.samplers.GridSampler(grid, seed=0)

    def reopen(self) -> optuna.Study:
        """The experiment's study on a connection of its own (a forked worker's)."""
        assert self.storage is not None, "a worker needs the storage's URL"
        return optuna.load_study(
            study_name=self.exp.study_name(quick=self.quick),
            storage=open_storage(self.storage),
            sampler=self.sampler(),
            pruner=optuna.pruners.NopPruner(),
        )

    # ---- one trial per Trainer --------------------------------------------------------------

    def train_singly(self, study: optuna.Study, points: list[Point]) -> None:
        """Each point as `study.optimize` trains a trial: enqueued, so that the points are
        exactly these (the grid sampler would pick among every point it counts as unvisited,
        a diverged one included)."""

        def report(study: optuna.Study, trial: FrozenTrial) -> None:
            self.console.print(trial_line(trial, self.metric))

        for point in points:
            study.enqueue_trial(grid_params(self.exp, point, self.seeds))
        with collect_after_trials() as collect:
            study.optimize(
                self.objective,
                n_trials=len(points),
                callbacks=[collect, report],
                catch=(NonFiniteObjective,),
            )

    def objective(self, trial: optuna.Trial) -> float:
        """The studies' objective (`run_trial`) at the trial's point of the grid."""
        point = self.point(trial)
        cfg = self.configs[point.label]
        probes = self.exp.probes(cfg)
        run_dir = self.folder / f"trial-{trial.number}"
        return run_trial(
            trial,
            cfg,
            trial_params(point.setting.keys(quick=self.quick)),
            run_dir,
            seed=point.seed,
            wandb_mode=self.mode,
            run_name=f"trial-{trial.number}-{point.label}",
            callbacks=probes,
            extra_attrs=lambda result: self.attrs(point, run_dir, probes, result),
        )

    def point(self, trial: optuna.Trial) -> Point:
        """The trial's point: its label and seed sampled with `suggest`, like any dimension
        (an enqueued trial gets the values it was enqueued with)."""
        values = suggest(trial, self.space)
        label = str(values[self.exp.factor])
        setting = next(s for s in self.exp.settings if s.label == label)
        return Point(setting, int(values.get("seed", self.seeds[0])))

    def attrs(
        self, point: Point, run_dir: Path, probes: list[Any], result: TrialResult
    ) -> dict[str, Any]:
        """The experiment's user attributes of a finished point, beside `record_result`'s."""
        extra: dict[str, Any] = {
            "fingerprint": fingerprint(point.label, self.configs[point.label], point.seed),
            "run_dir": str(run_dir),
        }
        for probe in probes:
            extra.update(getattr(probe, "summary", dict)())
        if result.nonfinite_at is not None:
            extra["diverged_at"] = result.nonfinite_at + 1
        return extra

    # ---- populations ------------------------------------------------------------------------

    def member_spec(self, study: optuna.Study, point: Point, params: dict[str, Any]) -> MemberSpec:
        """The point as a population member: its trial asked from `study` (enqueued with its
        grid values first), its folder, run name, probes and own config."""
        # Enqueued and asked under the study's lock: a worker process may be asking too.
        with self._lock(study), warnings.catch_warnings():
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
        return MemberSpec(
            trial,
            params,
            self.folder / f"trial-{trial.number}",
            point.seed,
            f"trial-{trial.number}-{point.label}",
            probes=self.exp.probes(self.configs[point.label]),
            config=self.configs[point.label],
        )

    def _lock(self, study: optuna.Study) -> contextlib.AbstractContextManager[None]:
        if self.storage is None:
            return contextlib.nullcontext()
        return storage_lock(self.storage, study.study_name)

    def tell(
        self,
        study: optuna.Study,
        m: MemberSpec,
        point: Point,
        result: TrialResult,
        seconds: float,
    ) -> FrozenTrial:
        """Record a member's result and attributes on its trial and tell the study."""
        trial = m.trial
        assert isinstance(trial, optuna.Trial)
        record_result(trial, result, seconds, self.metric)
        for key, value in self.attrs(point, m.run_dir, m.probes, result).items():
            trial.set_user_attr(key, value)
        if result.nonfinite_at is not None:
            return study.tell(trial, state=TrialState.FAIL)
        if result.pruned_at is not None:
            return study.tell(trial, state=TrialState.PRUNED)
        return study.tell(trial, result.value)


def default_workers() -> int:
    """`regzoo experiment`'s worker processes: one a usable core on Linux (the networks are
    too small to split over threads, so processes, each on one thread, use the cores), else 1
    (forking a process that has imported torch is only safe on Linux)."""
    return usable_cores() if sys.platform.startswith("linux") else 1


# One experiment's grid, its study and the points it still has to train.
GridRun = tuple[Grid, optuna.Study, list[Point]]


def train_grids(
    runs: list[GridRun], population: int, console: Console, *, workers: int = 1
) -> None:
    """Train the missing points of one or more experiments: one trial per Trainer with
    `population` 1, else as the fewest populations of at most `population` members, points of
    different experiments together where their settings allow (`_populations.plan_all`).
    With `workers` > 1 that many processes take the populations one after another, largest
    first (`_work_on`)."""
    runs = [run for run in runs if run[2]]
    if not runs:
        return
    if population <= 1:
        for grid, study, points in runs:
            grid.train_singly(study, points)
        return
    items = [(grid.exp, p) for grid, _, points in runs for p in points]
    configs = {grid.exp.name: grid.configs for grid, _, _ in runs}
    batches = plan_all(items, configs, quick=runs[0][0].quick, size=population)
    sizes = ", ".join(str(len(b)) for b in batches)
    console.print(f"{len(items)} trials as {len(batches)} population(s): {sizes}")
    for _, study, _ in runs:
        _drain_queue(study)
    workers = min(workers, len(batches))
    if workers <= 1:
        _train_batches(runs, batches, population, console)
        return
    console.print(f"{workers} worker processes")
    largest = sorted(batches, key=lambda b: _cost(b, configs), reverse=True)
    _work_on(runs, largest, population, console, workers)


def _train_batches(
    runs: list[GridRun],
    batches: Iterable[Batch],
    population: int,
    console: Console,
) -> None:
    """Train the populations in order, each as one population (or, where its config cannot
    be batched, one trial per Trainer with a one-line note)."""
    owners = {grid.exp.name: (grid, study) for grid, study, _ in runs}
    with collect_after_trials() as collect:
        for batch in batches:
            refused = _refusal(batch.cfg, population)
            if refused is not None:
                note = f"one trial per Trainer for {len(batch)}: {refused}"
                console.print(note, style="yellow", markup=False)
                for exp, point in zip(batch.experiments, batch.points, strict=True):
                    grid, study = owners[exp.name]
                    grid.train_singly(study, [point])
                continue
            told = _train_population(owners, batch)
            for grid, trial in told:
                console.print(trial_line(trial, grid.metric))
            collect(owners[batch.experiments[-1].name][1], told[-1][1])


def _work_on(
    runs: list[GridRun], batches: list[Batch], population: int, console: Console, workers: int
) -> None:
    """`workers` processes (this one and forked children, which inherit the plan) take the
    next untrained population until none is left. A child opens its own connections to the
    studies' storages; asking a member's trial is atomic across them (`storage_lock`). A
    failed or interrupted child fails its own members only; the run then stops with an error
    (or exit 130), and a rerun trains what is missing."""
    context = multiprocessing.get_context("fork")
    taken = context.Value("i", 0)

    def next_batches() -> Iterator[Batch]:
        while True:
            with taken.get_lock():
                index = taken.value
                taken.value += 1
            if index >= len(batches):
                return
            yield batches[index]

    def child() -> None:
        mine = [(grid, grid.reopen(), points) for grid, _, points in runs]
        _train_batches(mine, next_batches(), population, console)

    children = [context.Process(target=child) for _ in range(workers - 1)]
    for process in children:
        process.start()
    try:
        _train_batches(runs, next_batches(), population, console)
    finally:
        for process in children:
            process.join()
    failed = [p.exitcode for p in children if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(children)} worker processes failed (exit codes {failed}); "
            "their populations' trials are failed in the storage: rerun to train them"
        )


def _cost(batch: Batch, configs: Mapping[str, Mapping[str, StudyConfig]]) -> float:
    """A population's rough cost, to start the largest first: its steps (epochs x batches per
    epoch), with one step of overhead per step of its longest member and a tenth of one for
    each member's own (what a member adds to a batched step)."""
    own = [configs[e.name][p.label] for e, p in zip(batch.experiments, batch.points, strict=True)]
    epochs = [c.trainer.max_epochs for c in own]
    data = batch.cfg.data.options
    size, per_batch = data.get("train_size"), data.get("batch_size")
    steps = math.ceil(size / per_batch) if size and per_batch else 1
    return steps * (max(epochs) + 0.1 * sum(epochs))


def _train_population(
    owners: dict[str, tuple[Grid, optuna.Study]], batch: Batch
) -> list[tuple[Grid, FrozenTrial]]:
    """Ask one trial per point (in its experiment's study), train them as one population,
    tell each its outcome. An error fails every member (recorded on each) and propagates, as
    in `study.optimize`."""
    asked: list[tuple[Grid, optuna.Study, MemberSpec]] = []
    try:
        for exp, point, params in zip(batch.experiments, batch.points, batch.params, strict=True):
            grid, study = owners[exp.name]
            asked.append((grid, study, grid.member_spec(study, point, params)))
        start = time.perf_counter()
        with contextlib.ExitStack() as beats:
            for _, study in owners.values():
                trials = [m.trial for _, s, m in asked if s is study]
                beats.enter_context(member_heartbeats(study, trials))  # type: ignore[arg-type]
            results = train_population(
                batch.cfg, [m for _, _, m in asked], wandb_mode=asked[0][0].mode
            )
    except BaseException as exc:
        for _, study, m in asked:
            assert isinstance(m.trial, optuna.Trial)
            m.trial.set_user_attr("error", error_text(exc))
            study.tell(m.trial, state=TrialState.FAIL)
        raise
    seconds = time.perf_counter() - start
    return [
        (grid, grid.tell(study, m, point, result, seconds))
        for (grid, study, m), point, result in zip(asked, batch.points, results, strict=True)
    ]


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
