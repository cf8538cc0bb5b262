"""`regzoo ablate` and `regzoo confirm` batched (their default: every run that batches in one
Trainer) against `--population 1` (one Trainer a run), on copies of one finished study.

    .venv/bin/python -m benchmarks.verdicts [--quick] [--only ablate confirm] [--repeats 3]
        [--trials N] [--threads N] [--profile OUT.prof [--population 1]]

Each verdict first needs a study: `regzoo run CONFIG --wandb disabled --set confirm=null` runs
once into a temporary folder (its cwd, so `runs/` lands there; `confirm=null`, so no run of the
verdict exists yet). Every measurement then copies that folder (the SQLite file and `runs/`) and
times `regzoo ablate|confirm NAME --storage <copy> --wandb disabled [--population 1]` from
process start to exit, wall and CPU seconds (user + system, the process and its children), so
that each trains all of its runs; the two sides alternate ABBA. The figures: median seconds with
min-max, the ratio of the medians (`--population 1` / batched), and the verdict each side came to
(read back through `regzoo.studies.verdicts.read`): every ablation variant's effect on test/acc
with its 95% interval, and the confirmed test/acc with its interval; the two sides agree when
each one's estimate lies within the other's interval.

The cases: `fnn-mnist1d` ablated with 5 seeds (study cut to 16 of its 40 trials: the ablation
depends only on its best trial; target: batched at least 4x as fast), and the default study
(`cnn-digits`, 16 trials) confirmed with its config's `top: 1, seeds: 5` (target: at least
1.3x). `--profile` runs one batched confirmation under cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import math
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, TINY, Figure, alternate, command, fmt, median

BATCHED, SINGLE = "batched", "--population 1"


@dataclass(frozen=True)
class Case:
    """A verdict command on a shipped study: the study to run first, then the command."""

    kind: str  # "ablate" or "confirm"
    config: Path
    study: str  # the config's name:
    trials: int | None  # the study's --trials (None: the config's)
    args: tuple[str, ...]  # the verdict command's own options
    target: float  # --population 1 seconds / batched seconds, at least

    def line(self) -> str:
        return " ".join(["regzoo", self.kind, self.study, *self.args])


CASES = {
    "ablate": Case(
        "ablate", REPO / "studies/configs/fnn-mnist1d.yaml", "fnn-mnist1d", 16, ("--seeds", "5"), 4
    ),
    # The study runs with confirm=null (no run exists yet): the config's own confirm is asked for.
    "confirm": Case(
        "confirm",
        REPO / "studies/configs/default.yaml",
        "cnn-digits",
        None,
        ("--top", "1", "--seeds", "5"),
        1.3,
    ),
}
# --quick: a study of 1 trial of 2 epochs of 3 batches, verdicts over 2 seeds, each side once;
# with REGZOO_BENCH_TINY=1 (the tests) the confirmation alone.
QUICK_STUDY = ("--set", "trainer.max_epochs=2", "--set", "trainer.limit_train_batches=3")
QUICK_TRIALS, QUICK_SEEDS = 1, 2


@dataclass(frozen=True)
class Estimate:
    """A verdict's number with its 95% interval (nan bounds where fewer than 2 seeds)."""

    mean: float
    low: float
    high: float

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class Sample:
    """One timed verdict command: its seconds, the runs it trained and what it concluded."""

    wall: float
    cpu: float
    runs: int  # runs its companion study holds afterwards (finished or not)
    estimates: dict[str, Estimate]  # ablation: variant -> effect; confirmation: configuration
    tested: dict[str, float]  # test/acc of each complete run, by its fingerprint
    load: float = math.nan  # the 1-minute load average when the command ended


# ---- running the commands ----------------------------------------------------------------------


def regzoo(args: Sequence[str], cwd: Path, *, threads: int | None = None) -> tuple[float, float]:
    """Run `python -m regzoo ARGS` in `cwd` (W&B quiet; `REGZOO_THREADS=threads` if given); its
    wall and CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true", "WANDB_MODE": "disabled"}
    if threads:
        env["REGZOO_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "regzoo", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) exited with {proc.returncode}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def storage(folder: Path) -> str:
    return f"sqlite:///{folder / 'studies.db'}"


def run_study(case: Case, folder: Path, *, trials: int | None, quick: bool) -> float:
    """The study the verdict needs, run into `folder`; its wall seconds."""
    args = ["run", str(case.config), "--storage", storage(folder), "--no-progress"]
    args += ["--wandb", "disabled", "--set", "confirm=null", *(QUICK_STUDY if quick else ())]
    args += ["--trials", str(trials)] if trials else []
    return regzoo(args, folder)[0]


def verdict_args(case: Case, folder: Path, population: int | None, *, quick: bool) -> list[str]:
    own = list(case.args)
    if quick:  # fewer seeds
        own[own.index("--seeds") + 1] = str(QUICK_SEEDS)
    args = [case.kind, case.study, *own, "--storage", storage(folder), "--wandb", "disabled"]
    return args + (["--population", str(population)] if population else [])


def measure(
    case: Case, study: Path, population: int | None, *, quick: bool, threads: int | None = None
) -> Sample:
    """The verdict command on a fresh copy of the `study` folder, so that it trains every run."""
    with tempfile.TemporaryDirectory(prefix="regzoo-verdict-") as tmp:
        copy = Path(tmp) / "study"
        shutil.copytree(study, copy)
        wall, cpu = regzoo(verdict_args(case, copy, population, quick=quick), copy, threads=threads)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
        return Sample(wall, cpu, *read_verdict(case, storage(copy)), load=load)


def read_verdict(case: Case, url: str) -> tuple[int, dict[str, Estimate], dict[str, float]]:
    """The companion's run count, the ablation's effects or the confirmation's means, and each
    complete run's test/acc by fingerprint."""
    import optuna

    from regzoo.studies.executor.storage import open_storage
    from regzoo.studies.verdicts.read import read_verdicts
    from regzoo.studies.verdicts.store import companion_name

    study = optuna.load_study(study_name=case.study, storage=open_storage(url))
    companion = optuna.load_study(study_name=companion_name(case.study), storage=open_storage(url))
    runs = companion.get_trials(deepcopy=False)
    tested = {
        str(t.user_attrs["fingerprint"]): float(t.user_attrs["test/acc"])
        for t in runs
        if t.state.name == "COMPLETE" and "test/acc" in t.user_attrs
    }
    verdicts = read_verdicts(study, url)
    if case.kind == "ablate":
        a = verdicts.ablation
        assert a is not None, f"{url}: no ablation recorded"
        effects = {row.variant: a.effect(row) for row in a.variants}
        return len(runs), {k: Estimate(e.mean, e.low, e.high) for k, e in effects.items()}, tested
    c = verdicts.confirmation
    assert c is not None, f"{url}: no confirmation recorded"
    means = {cand.label: cand.summary("test/acc", c.seeds) for cand in c.candidates}
    return len(runs), {k: Estimate(s.mean, s.low, s.high) for k, s in means.items()}, tested


def compare(
    case: Case,
    *,
    repeats: int,
    trials: int | None,
    quick: bool,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, list[Sample]], float]:
    """Both sides `repeats` times each (ABBA) on copies of one study; the study's wall seconds."""
    with tempfile.TemporaryDirectory(prefix="regzoo-verdict-study-") as tmp:
        folder = Path(tmp)
        study_s = run_study(case, folder, trials=trials, quick=quick)
        log(f"{case.study}: study in {study_s:.0f} s")

        def side(name: str, population: int | None) -> Callable[[], Sample]:
            def run() -> Sample:
                s = measure(case, folder, population, quick=quick, threads=threads)
                log(
                    f"  {case.kind} {name}: {s.wall:.1f} s wall, {s.cpu:.1f} s CPU, {s.runs} runs, "
                    f"load {s.load:.1f}"
                )
                return s

            return run

        samples = alternate({BATCHED: side(BATCHED, None), SINGLE: side(SINGLE, 1)}, repeats)
    return samples, study_s


# ---- figures -----------------------------------------------------------------------------------


def spread(values: Sequence[float], unit: str = "s") -> str:
    """Median with min-max: `41.2 s (39.8-44.0)`."""
    if len(values) == 1:
        return fmt(values[0], unit)
    return f"{fmt(median(values), unit)} ({min(values):.1f}-{max(values):.1f})"


def agree(a: dict[str, Estimate], b: dict[str, Estimate]) -> bool | None:
    """Whether every estimate of each side lies within the other side's interval (None where
    an interval is undefined: fewer than 2 seeds finished)."""
    if a.keys() != b.keys():
        return False
    pairs = [(a[k], b[k]) for k in a]
    if any(math.isnan(x.low) or math.isnan(y.low) for x, y in pairs):
        return None
    return all(x.holds(y.mean) and y.holds(x.mean) for x, y in pairs)


def run_differences(a: Sample, b: Sample) -> list[float]:
    """|test/acc difference| of each run both sides completed (same configuration and seed)."""
    return [abs(a.tested[k] - b.tested[k]) for k in a.tested.keys() & b.tested.keys()]


def estimates_text(estimates: dict[str, Estimate]) -> str:
    return "; ".join(f"{k}: {e.text()}" for k, e in estimates.items())


def case_figures(
    case: Case,
    samples: dict[str, list[Sample]],
    *,
    trials: int | None,
    quick: bool,
    threads: int | None = None,
) -> list[Figure]:
    """Wall seconds (with the target), CPU seconds and the verdicts of both sides."""
    flags = [f"--only {case.kind}", *([f"--threads {threads}"] if threads else [])]
    cmd = command("benchmarks.verdicts", *flags) + (" --quick" if quick else "")
    batched, single = samples[BATCHED], samples[SINGLE]
    runs = sorted({s.runs for s in batched + single})
    what = (
        f"`{case.line()}`{f' (study: {trials} trials)' if trials else ''}, "
        f"{'/'.join(map(str, runs))} runs, {len(batched)} repeats"
    )
    loads = [s.load for s in batched + single]
    what += f", load {min(loads):.1f}-{max(loads):.1f}"
    what += f", REGZOO_THREADS={threads}" if threads else ""
    walls = [median([s.wall for s in side]) for side in (batched, single)]
    cpus = [median([s.cpu for s in side]) for side in (batched, single)]
    first = (batched[0].estimates, single[0].estimates)
    consistent = all(s.estimates == side[0].estimates for side in (batched, single) for s in side)
    kind = "effect on test/acc (full - variant)" if case.kind == "ablate" else "confirmed test/acc"
    verdicts = agree(*first)
    diffs = run_differences(batched[0], single[0])
    return [
        Figure(
            "verdicts",
            f"{what}: wall s, batched vs `{SINGLE}` (median, min-max)",
            spread([s.wall for s in batched]),
            spread([s.wall for s in single]),
            walls[1] / walls[0],
            f"≥ {case.target:g}×",
            walls[1] / walls[0] >= case.target,
            cmd,
        ),
        Figure(
            "verdicts",
            f"{what}: CPU s (user + system), batched vs `{SINGLE}`",
            spread([s.cpu for s in batched]),
            spread([s.cpu for s in single]),
            cpus[1] / cpus[0],
            command=cmd,
        ),
        Figure(
            "verdicts",
            f"`{case.line()}`: {kind} [95% CI], batched vs `{SINGLE}`"
            f"{'' if consistent else ' (first repeat; repeats differ)'}",
            estimates_text(first[0]),
            estimates_text(first[1]),
            target="within each other's CI",
            met=verdicts,
            command=cmd,
        ),
        Figure(
            "verdicts",
            f"`{case.line()}`: runs of the same configuration and seed, batched vs `{SINGLE}`: "
            "identical test/acc, largest |difference|",
            f"{sum(d == 0 for d in diffs)} of {len(diffs)} identical",
            f"max {max(diffs, default=math.nan):.4f}",
            command=cmd,
        ),
    ]


def figures(
    *,
    quick: bool = False,
    only: Sequence[str] | None = None,
    repeats: int | None = None,
    trials: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[Figure]:
    repeats = repeats or (1 if quick else 3)
    rows = []
    for name in only or (["confirm"] if TINY else list(CASES)):
        case = CASES[name]
        n = QUICK_TRIALS if quick else trials or case.trials
        samples, _ = compare(case, repeats=repeats, trials=n, quick=quick, threads=threads, log=log)
        rows += case_figures(case, samples, trials=n, quick=quick, threads=threads)
    return rows


# ---- where a batched confirmation's time goes -------------------------------------------------

# (label, file fragment, function): the outermost call's cumulative seconds (cProfile counts a
# recursive function once); phases nest (the fit holds the epochs, which hold the steps).
PHASES = (
    ("imports", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("regzoo main", "studies/cli/main.py", "main"),
    ("  runs planned and trained", "verdicts/commands.py", "_train"),
    ("    datamodule setup (every Trainer's)", "datamodules/base.py", "setup"),
    ("    members built (models, run folders, loggers)", "population/train.py", "_member"),
    ("    runs alone (train_run, each its Trainer)", "studies/trial/train.py", "train_run"),
    ("    Trainer.fit (all of them)", "lightning/pytorch/trainer/trainer.py", "fit"),
    ("      population training steps", "zoo/population/module.py", "training_step"),
    ("      population validation", "zoo/population/module.py", "_validate"),
    ("      training steps of runs alone", "zoo/classifier.py", "training_step"),
    ("      validation steps of runs alone", "zoo/classifier.py", "validation_step"),
    ("    members ended: checkpoint, test, records", "studies/population/module.py", "finish"),
    ("      member test", "studies/population/module.py", "evaluate"),
    ("    Trainer.test of runs alone", "lightning/pytorch/trainer/trainer.py", "test"),
    ("    Optuna tell", "trial/lifecycle.py", "tell"),
    ("  W&B study run refreshed", "studies/cli/main.py", "_refresh_study_run"),
    ("W&B (largest wandb function)", "wandb/", "*"),
    ("Optuna storage (largest optuna.storages function)", "optuna/storages/", "*"),
)


def profile(
    case: Case,
    path: Path,
    *,
    population: int | None = None,
    quick: bool = False,
    threads: int | None = None,
) -> dict[str, float]:
    """One verdict command (batched unless `population`) under cProfile, into `path`; seconds
    per phase (`PHASES`; the phases of the other side read 0)."""
    with tempfile.TemporaryDirectory(prefix="regzoo-verdict-profile-") as tmp:
        folder = Path(tmp)
        run_study(case, folder, trials=QUICK_TRIALS if quick else case.trials, quick=quick)
        args = ["-m", "cProfile", "-o", str(path.resolve()), "-m", "regzoo"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
        env.update({"REGZOO_THREADS": str(threads)} if threads else {})
        cmd = [sys.executable, *args, *verdict_args(case, folder, population, quick=quick)]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
    return {"process wall": wall, **phases(pstats.Stats(str(path)))}


def phases(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each phase's function(s) (the largest one for a `*` pattern, the
    outermost caller of a package being the one with the most cumulative time)."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {"profiled total": stats.total_tt}  # type: ignore[attr-defined]
    for label, where, name in PHASES:
        found = [
            v[3]
            for (file, _, func), v in table.items()
            if where in file and (name == "*" or func == name)
        ]
        out[label] = max(found, default=0.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(CASES), default=None)
    p.add_argument("--repeats", type=int, default=None, help="each side (default 3; 1 --quick)")
    p.add_argument("--trials", type=int, default=None, help="the study's trials (default: case's)")
    p.add_argument("--threads", type=int, default=None, help="REGZOO_THREADS of the commands")
    p.add_argument(
        "--profile", type=Path, default=None, help="profile one verdict (--only's first) instead"
    )
    p.add_argument("--population", type=int, default=None, help="--profile's (default: batched)")
    args = p.parse_args()
    if args.profile:
        case = CASES[(args.only or ["confirm"])[0]]
        spent = profile(
            case,
            args.profile,
            population=args.population,
            quick=args.quick,
            threads=args.threads,
        )
        for label, seconds in spent.items():
            print(f"{seconds:8.1f} s  {label}")
        return
    rows = figures(
        quick=args.quick,
        only=args.only,
        repeats=args.repeats,
        trials=args.trials,
        threads=args.threads,
        log=lambda line: print(line, flush=True),
    )
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x "
        verdict = {True: "met", False: "MISSED", None: ""}[row.met]
        print(f"{row.figure}\n  ours {row.ours}\n  base {row.baseline}\n  {ratio}{verdict}")


if __name__ == "__main__":
    main()
