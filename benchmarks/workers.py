"""Study throughput with more worker processes, and with DDP trials: the default study on CPU.

    .venv/bin/python -m benchmarks.workers [--trials 20] [--ddp-trials 6]

Runs `python -m studies run studies/configs/default.yaml` (W&B off, a fresh SQLite storage in a
temporary folder) with 1 worker, with 2 workers, and with 1 worker whose trials train with DDP on
2 CPU processes (gloo). The rate is finished trials per minute between the first trial's start
and the last trial's end, read from the storage, so process start-up is left out; epochs per
minute shows whether the two runs' trials were alike (TPE samples differently with 2 workers).
Target: 2 workers at least 1.6x the trials per minute of 1 worker on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "studies" / "configs" / "default.yaml"
TARGET = 1.6


def measure(
    *,
    trials: int,
    workers: int = 1,
    devices_per_trial: int = 1,
    threads: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, float]:
    """Run the default study to `trials` finished trials; its throughput figures.

    `threads` fixes a single process's torch threads (OMP_NUM_THREADS); workers get theirs from
    `--workers` (cores / workers each). `overrides` are `--set` items (e.g. `pruner.name=none`).
    """
    with tempfile.TemporaryDirectory(prefix="regzoo-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'studies.db'}"
        command = [sys.executable, "-m", "studies", "run", str(CONFIG), "--storage", url]
        command += ["--trials", str(trials), "--workers", str(workers), "--wandb", "disabled"]
        command += ["--devices-per-trial", str(devices_per_trial), "--no-progress"]
        command += [arg for item in overrides for arg in ("--set", item)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        subprocess.run(command, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="cnn-digits", storage=url)
        done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    minutes = (last - first).total_seconds() / 60
    epochs = sum(int(t.user_attrs.get("epochs", 0)) for t in done)
    return {
        "trials": len(done),
        "trials/min": len(done) / minutes,
        "epochs/min": epochs / minutes,
        "wall s": wall,
    }


def run(*, trials: int = 20, ddp_trials: int = 6) -> dict[str, dict[str, float]]:
    """The figures: 1 worker, 2 workers, DDP on 2 CPU processes, and the 2-worker speed-up.

    "1 worker, 1 thread" separates the gain of a second process from the cost of torch's two
    intra-op threads on tiny tensors (large on a busy machine, where one thread waits for the
    other).
    """
    figures = {
        "1 worker": measure(trials=trials),
        "1 worker, 1 thread": measure(trials=trials, threads=1),
        "2 workers": measure(trials=trials, workers=2),
        "1 worker, DDP x2": measure(trials=ddp_trials, devices_per_trial=2),
    }
    one, two = figures["1 worker"], figures["2 workers"]
    figures["speed-up"] = {
        "trials/min": two["trials/min"] / one["trials/min"],
        "epochs/min": two["epochs/min"] / one["epochs/min"],
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ddp-trials", type=int, default=6)
    args = parser.parse_args()
    figures = run(trials=args.trials, ddp_trials=args.ddp_trials)
    print(
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'run':<20} {'trials':>6} {'trials/min':>10} {'epochs/min':>10} {'wall s':>7}")
    for name, f in figures.items():
        if name == "speed-up":
            continue
        print(
            f"{name:<20} {f['trials']:>6.0f} {f['trials/min']:>10.1f} {f['epochs/min']:>10.1f} "
            f"{f['wall s']:>7.1f}"
        )
    speed = figures["speed-up"]
    verdict = "meets" if speed["trials/min"] >= TARGET else "misses"
    print(
        f"2 workers / 1 worker: {speed['trials/min']:.2f}x trials/min, "
        f"{speed['epochs/min']:.2f}x epochs/min ({verdict} the {TARGET}x target)"
    )


if __name__ == "__main__":
    main()
