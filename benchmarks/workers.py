"""Study throughput with more worker processes, and with DDP trials: the default study on CPU.

    .venv/bin/python -m benchmarks.workers [--trials 20] [--ddp-trials 6]
    .venv/bin/python -m benchmarks.workers --profile [--trials 20]   # where the time goes (py-spy)

Runs `regzoo run studies/configs/default.yaml` (W&B off, a fresh SQLite storage in a
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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
    profile_to: Path | None = None,
) -> dict[str, float]:
    """Run the default study to `trials` finished trials; its throughput figures.

    `threads` fixes a single process's torch threads (OMP_NUM_THREADS); workers get theirs from
    `--workers` (cores / workers each). `overrides` are `--set` items (e.g. `pruner.name=none`).
    `profile_to`: run it under py-spy, writing raw stacks there (see `profile`).
    """
    with tempfile.TemporaryDirectory(prefix="regzoo-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'studies.db'}"
        command = [sys.executable, "-m", "regzoo", "run", str(CONFIG), "--storage", url]
        command += ["--trials", str(trials), "--workers", str(workers), "--wandb", "disabled"]
        command += ["--devices-per-trial", str(devices_per_trial), "--no-progress"]
        command += ["--set", "confirm=null"]  # the search alone, not the confirmation after it
        command += [arg for item in overrides for arg in ("--set", item)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        if profile_to is not None:  # every process's Python stacks, waiting ones included
            spy = [str(_py_spy()), "record", "--subprocesses", "--idle", "--threads"]
            spy += ["--format", "raw", "--rate", str(PROFILE_RATE), "-o", str(profile_to), "--"]
            command = spy + command
        start = time.perf_counter()
        subprocess.run(
            command,
            cwd=tmp,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if profile_to is not None else None,
        )
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


PROFILE_RATE = 100  # samples per second and thread

# What a trial-running process's main thread was doing: the activity of the innermost frame
# whose file matches (py-spy's frames are "function (path:line)", root first; paths are
# relative to sys.path), so a forward inside a fit counts as compute; anything under an
# import counts as the import.
ACTIVITIES = (
    ("imports", ("<frozen importlib",)),
    ("waiting for a trial slot", ("studies/_budget.py",)),
    ("sampling (TPE)", ("optuna/samplers/",)),
    ("pruning decision", ("optuna/pruners/",)),
    ("storage (SQLite)", ("optuna/storages/", "sqlalchemy/", "sqlite3/")),
    ("forward, backward, optimizer step", ("torch/nn/", "torch/autograd/", "torch/optim/")),
    ("torchmetrics", ("torchmetrics/",)),
    ("data loading", ("torch/utils/data/",)),
    ("Lightning: loop, hooks, checkpoint, logging", ("lightning/", "lightning_fabric/")),
    ("regzoo: trial set-up, callbacks, records", ("studies/", "zoo/", "datamodules/")),
)
OTHER = "other"
FRAME_FILE = re.compile(r"\((.*):\d+\)$")


def classify(stack: str) -> str:
    """The activity of a `;`-joined stack, root first. Code run by an import (a module's body)
    counts as the import."""
    if "<frozen importlib" in stack:
        return "imports"
    for frame in reversed(stack.split(";")):
        found = FRAME_FILE.search(frame)
        path = found.group(1) if found else frame
        for name, marks in ACTIVITIES:
            if path.startswith(marks):
                return name
    return OTHER


def read_profile(path: Path) -> dict[str, float]:
    """Seconds of main-thread time per activity, summed over the processes that ran trials.

    A raw line is `process PID:"cmd";thread (TID);frame;...;frame COUNT`, with the parents'
    `process PID:"cmd";` before it for a subprocess. Only main threads
    count, and only processes that trained (the `--workers` parent waits for its children).
    """
    per_process: dict[str, Counter[str]] = {}
    trained: set[str] = set()
    line = re.compile(
        r'^(?:process \d+:"[^"\n]*";)*process (\d+):"[^"\n]*";thread \((\d+)\)[^;\n]*;(.*) (\d+)$',
        re.M,
    )
    for match in line.finditer(path.read_text(errors="replace")):
        pid, tid, stack, count = match.group(1), match.group(2), match.group(3), match.group(4)
        if tid != pid:  # a Linux main thread's id is its process's
            continue
        if "Trainer.fit (" in stack:  # not the parent, which imports Lightning too
            trained.add(pid)
        per_process.setdefault(pid, Counter())[classify(stack)] += int(count)
    seconds: Counter[str] = Counter()
    for pid in trained:
        seconds.update(per_process[pid])
    return {name: n / PROFILE_RATE for name, n in seconds.items()}


def profile(*, trials: int = 20, overrides: Sequence[str] = ()) -> None:
    """1 worker and 2 workers under py-spy: main-thread seconds per finished trial, summed
    over the workers, by activity. Equal columns would mean a perfect 2x; the rows that grow
    are what the second worker costs."""
    runs = {}
    kept = Path(tempfile.mkdtemp(prefix="regzoo-spy-"))  # the raw stacks stay, for a closer look
    for workers in (1, 2):
        out = kept / f"workers-{workers}.txt"
        figures = measure(trials=trials, workers=workers, overrides=overrides, profile_to=out)
        spent = read_profile(out)
        if not spent:  # e.g. ptrace refused: py-spy then samples nothing
            raise SystemExit(f"py-spy recorded no process that trained ({out}); can it attach?")
        runs[workers] = (figures, spent)
    names = [name for name, _ in ACTIVITIES] + [OTHER]
    print(f"main-thread seconds per finished trial ({trials} trials), summed over workers")
    print(f"{'activity':<42} {'1 worker':>9} {'2 workers':>9} {'ratio':>6}")
    totals = {w: sum(spent.values()) / f["trials"] for w, (f, spent) in runs.items()}
    for name in names:
        one, two = (runs[w][1].get(name, 0.0) / runs[w][0]["trials"] for w in (1, 2))
        if one or two:
            ratio = f"{two / one:.2f}" if one else "-"
            print(f"{name:<42} {one:>9.3f} {two:>9.3f} {ratio:>6}")
    print(f"{'total':<42} {totals[1]:>9.3f} {totals[2]:>9.3f} {totals[2] / totals[1]:>6.2f}")
    for w, (f, _) in runs.items():
        print(
            f"{w} worker(s): {f['trials/min']:.1f} trials/min, {f['epochs/min']:.0f} epochs/min "
            f"(under py-spy, {PROFILE_RATE} samples/s)"
        )
    print(f"raw stacks (py-spy --format raw): {kept}")


def py_spy() -> Path | None:
    """The py-spy executable (the dev extra installs it beside this Python), or None."""
    found = Path(shutil.which("py-spy") or Path(sys.executable).with_name("py-spy"))
    return found if found.exists() else None


def _py_spy() -> Path:
    found = py_spy()
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy (in the dev extra)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ddp-trials", type=int, default=6)
    parser.add_argument("--profile", action="store_true", help="py-spy 1 and 2 workers instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V")
    args = parser.parse_args()
    if args.profile:
        profile(trials=args.trials, overrides=args.overrides)
        return
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
