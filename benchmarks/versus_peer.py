"""regzoo against the script a new user would write instead (`benchmarks/peer.py`), end to end.

    .venv/bin/python -m benchmarks.versus_peer [--quick] [--repeats 3] [--population 1]
        [--threads 1] [--pin-threads]

The default study's work (`studies/configs/default.yaml`: 16 trials of at most 30 epochs, then
its best configuration retrained with 5 new seeds) three ways, each a fresh process in a fresh
temporary folder, timed from process start to exit:

- peer: `python benchmarks/peer.py --threads N` (Optuna's in-memory storage, its own default);
- regzoo: `python -m regzoo run studies/configs/default.yaml --storage sqlite:///TMP/studies.db
  --no-progress --wandb disabled` with `REGZOO_THREADS=N`;
- regzoo with `--population K` added: by default `--population 1`, one Trainer a trial, against
  the default study's own 8 trials at a time (`--population 0` leaves this side out).

The sides alternate ABBA (peer, regzoo, population; population, regzoo, peer; ...), `--repeats`
times each, in one run on one machine, all with N torch threads (1 by default: on a shared
2-core machine one thread is the faster choice, `studies/loop/threads.py`). `REGZOO_THREADS` is
regzoo's own knob, so a phase of regzoo that does not honour it shows in the figures;
`--pin-threads` also sets `OMP_NUM_THREADS=N` (torch's default count) for every process, to
compare the work alone. The figures: regzoo's speed ratio, peer seconds / regzoo seconds paired
by repeat (median, min-max), and each run's confirmed test accuracy (mean [95% interval] over
the seeds). Target: regzoo at least 1.5x as fast, its confirmed accuracy no lower than the
peer's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks._common import (
    REPO,
    TINY,
    Figure,
    alternate,
    command,
    finished,
    fmt,
    machine,
    median,
    run_study_process,
)
from benchmarks.peer import EPOCHS, SEEDS, TRIALS

DEFAULT = REPO / "studies" / "configs" / "default.yaml"
PEER_SCRIPT = REPO / "benchmarks" / "peer.py"
TARGET = 1.5
PEER, REGZOO = "peer", "regzoo"


@dataclass(frozen=True)
class Settings:
    """One comparison; None keeps a side's own default (the default study's values)."""

    trials: int | None = None
    epochs: int | None = None
    seeds: int | None = None
    repeats: int = 3
    population: int = 1  # the other regzoo side's --population; 0 leaves it out
    threads: int = 1
    pin_threads: bool = False  # OMP_NUM_THREADS too, for every process


QUICK = Settings(trials=3, epochs=2, seeds=2, repeats=1)
TINY_SETTINGS = Settings(trials=2, epochs=1, seeds=2, repeats=1)


@dataclass(frozen=True)
class Run:
    """One side's process: its wall time, finished trials and confirmed test accuracy."""

    wall: float  # seconds from process start to exit
    trials: int  # complete and pruned
    n: int  # confirmation seeds
    mean: float
    low: float
    high: float

    def accuracy(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def population_side(size: int) -> str:
    return f"regzoo --population {size}"


def run_peer(s: Settings, *, storage: str | None = None) -> Run:
    """`benchmarks/peer.py` in a fresh folder; `storage` an Optuna URL (default: in memory)."""
    with tempfile.TemporaryDirectory(prefix="regzoo-peer-") as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [sys.executable, str(PEER_SCRIPT), "--threads", str(s.threads), "--json", str(out)]
        for flag, value in (("--trials", s.trials), ("--epochs", s.epochs), ("--seeds", s.seeds)):
            cmd += [flag, str(value)] if value is not None else []
        cmd += ["--storage", storage] if storage else []
        env = {**os.environ, "PYTHONPATH": str(REPO), **_pinned(s)}
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-5:]
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {tail}")
        result = json.loads(out.read_text())
    done = sum(state in ("COMPLETE", "PRUNED") for state in result["states"])
    return Run(wall, done, len(result["test_acc"]), result["mean"], result["low"], result["high"])


def run_regzoo(s: Settings, *, population: int | None = None) -> Run:
    """`regzoo run` of the default study, W&B off, with `REGZOO_THREADS` set to `s.threads`
    (and `OMP_NUM_THREADS` with `s.pin_threads`); `--population` added unless None."""
    args = ["--wandb", "disabled"]
    args += ["--population", str(population)] if population is not None else []
    args += ["--set", f"trainer.max_epochs={s.epochs}"] if s.epochs is not None else []
    args += ["--set", f"confirm.seeds={s.seeds}"] if s.seeds is not None else []
    with _environ(REGZOO_THREADS=str(s.threads), **_pinned(s)):
        run = run_study_process(DEFAULT, trials=s.trials, args=args)
    c = run.confirmed
    if c is None:
        return Run(run.wall, len(finished(run)), 0, math.nan, math.nan, math.nan)
    return Run(run.wall, len(finished(run)), c.n, c.mean, c.low, c.high)


def _pinned(s: Settings) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(s.threads)} if s.pin_threads else {}


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """The environment variables `values` for the block (the study inherits them)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compare(
    s: Settings, *, on_run: Callable[[str, Run], None] | None = None
) -> dict[str, list[Run]]:
    """Every side `s.repeats` times, in ABBA order; `on_run(side, run)` after each run."""
    sides: dict[str, Callable[[], Run]] = {
        PEER: lambda: run_peer(s),
        REGZOO: lambda: run_regzoo(s),
    }
    if s.population > 0:
        sides[population_side(s.population)] = lambda: run_regzoo(s, population=s.population)

    def reported(side: str, run: Callable[[], Run]) -> Callable[[], Run]:
        def call() -> Run:
            result = run()
            if on_run is not None:
                on_run(side, result)
            return result

        return call

    return alternate({side: reported(side, run) for side, run in sides.items()}, s.repeats)


def result_figures(samples: dict[str, list[Run]], s: Settings, cmd: str) -> list[Figure]:
    """Per regzoo side: its speed ratio against the peer, and both confirmed accuracies."""
    peer = samples[PEER]
    work = (
        f"{s.trials or TRIALS} trials of ≤ {s.epochs or EPOCHS} epochs + {s.seeds or SEEDS}-seed "
        "confirmation, "
        f"{s.threads} torch thread(s) "
        f"({'OMP_NUM_THREADS' if s.pin_threads else 'REGZOO_THREADS / torch.set_num_threads'}), "
        "W&B off"
    )
    rows = []
    for side, runs in samples.items():
        if side == PEER:
            continue
        ratios = [p.wall / r.wall for p, r in zip(peer, runs, strict=True)]
        ratio = median(ratios)
        accurate = median([r.mean for r in runs]) >= median([p.mean for p in peer])
        rows += [
            Figure(
                "peer",
                f"`{side}` vs the hand-written Optuna + Lightning script (benchmarks/peer.py): "
                f"wall s, start to exit, {work}; median (min-max) of {len(runs)} runs, ratio "
                f"peer / regzoo paired by run ({_spread(ratios)})",
                _seconds(runs),
                _seconds(peer),
                ratio,
                f"≥ {TARGET}×",
                ratio >= TARGET,
                cmd,
            ),
            Figure(
                "peer",
                f"`{side}` vs benchmarks/peer.py: confirmed test/acc, mean [95% CI] over "
                f"{runs[0].n} seeds, each run",
                "; ".join(r.accuracy() for r in runs),
                "; ".join(p.accuracy() for p in peer),
                target="median mean ≥ peer's",
                met=accurate,
                command=cmd,
            ),
        ]
    return rows


def _seconds(runs: list[Run]) -> str:
    walls = [r.wall for r in runs]
    return f"{fmt(median(walls), 's')} ({min(walls):.1f}-{max(walls):.1f})"


def _spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}-{max(ratios):.2f}×"


def figures(*, quick: bool = False) -> list[Figure]:
    s = TINY_SETTINGS if TINY else (QUICK if quick else Settings())
    cmd = command("benchmarks.versus_peer", *(["--quick"] if quick else []))
    return result_figures(compare(s), s, cmd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-run sizes (not for publishing)")
    p.add_argument("--repeats", type=int, default=None, help="runs of each side (default 3)")
    p.add_argument("--population", type=int, default=None, help="0: no population side")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every side")
    p.add_argument("--pin-threads", action="store_true", help="OMP_NUM_THREADS too, everywhere")
    args = p.parse_args()
    s = TINY_SETTINGS if TINY else (QUICK if args.quick else Settings())
    s = replace(
        s,
        threads=args.threads,
        pin_threads=args.pin_threads,
        repeats=s.repeats if args.repeats is None else args.repeats,
        population=s.population if args.population is None else args.population,
    )
    print(f"machine: {machine()}; {s}", flush=True)
    print("| side | wall s | finished trials | confirmed test/acc, mean [95% CI] |")
    print("| --- | --- | --- | --- |", flush=True)

    def show(side: str, r: Run) -> None:
        print(f"| {side} | {r.wall:.1f} | {r.trials} | {r.accuracy()} (n={r.n}) |", flush=True)

    samples = compare(s, on_run=show)
    print(f"machine: {machine()}")
    for row in result_figures(samples, s, "-"):
        ratio = "" if row.ratio is None else f" ratio {row.ratio:.2f}x"
        print(f"{row.figure}: ours {row.ours}; peer {row.baseline};{ratio} met={row.met}")


if __name__ == "__main__":
    main()
