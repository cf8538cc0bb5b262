"""The benchmarks `python -m benchmarks` runs, in order, each a function from `quick` to its
BENCHMARKS.md rows; the augmentation and workers modules are read through small adapters."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from benchmarks import augmentation, end_to_end, memory, overhead, pruning, throughput, workers
from benchmarks._common import TINY, Figure, alternate, command, fmt, median

FigureFn = Callable[..., list[Figure]]


def augmentation_figures(*, quick: bool = False) -> list[Figure]:
    repeats, epochs = (1, 1) if quick or TINY else (5, 3)
    result = augmentation.measure_augmentation(repeats=repeats, epochs=epochs)
    cmd = command("benchmarks.augmentation", f"--repeats {repeats} --epochs {epochs}")
    rows = []
    for backend in ("device", "albumentations"):
        for clock, label in (("wall", "wall"), ("cpu", "CPU")):
            ratio = result[f"{clock}_ratio"][backend]
            target = backend == "device"
            rows.append(
                Figure(
                    "augmentation",
                    f"`{backend}` backend: {label} s per augmented epoch vs unaugmented",
                    fmt(result[f"{clock}_seconds_per_epoch"][backend], "s"),
                    fmt(result[f"{clock}_seconds_per_epoch"]["unaugmented"], "s"),
                    ratio,
                    f"≤ {augmentation.TARGET}×" if target else "-",
                    ratio <= augmentation.TARGET if target else None,
                    cmd,
                )
            )
    return rows


def workers_figures(*, quick: bool = False) -> list[Figure]:
    trials, ddp_trials, repeats = (4, 2, 1) if quick else (10, 4, 2)
    runs = {n: partial(workers.measure, trials=trials, workers=n) for n in (1, 2)}
    samples = alternate(runs, repeats)
    rate = {n: median([r["trials/min"] for r in rs]) for n, rs in samples.items()}
    epochs = {n: median([r["epochs/min"] for r in rs]) for n, rs in samples.items()}
    ddp = workers.measure(trials=ddp_trials, devices_per_trial=2)
    cmd = command("benchmarks.workers", f"--trials {trials} --ddp-trials {ddp_trials}")
    speed = rate[2] / rate[1]
    return [
        Figure(
            "workers",
            f"2 workers vs 1: finished trials/min, {trials}-trial default study ({repeats}×)",
            fmt(rate[2], "/min"),
            fmt(rate[1], "/min"),
            speed,
            f"≥ {workers.TARGET}×",
            speed >= workers.TARGET,
            cmd,
        ),
        Figure(
            "workers",
            "2 workers vs 1: training epochs/min (are the trials alike?)",
            fmt(epochs[2], "/min"),
            fmt(epochs[1], "/min"),
            epochs[2] / epochs[1],
            command=cmd,
        ),
        Figure(
            "workers",
            f"DDP, `--devices-per-trial 2` on CPU (gloo): trials/min, {ddp_trials} trials, "
            "vs 1 worker",
            fmt(ddp["trials/min"], "/min"),
            fmt(rate[1], "/min"),
            ddp["trials/min"] / rate[1],
            command=cmd,
        ),
    ]


SUITE: dict[str, FigureFn] = {
    "overhead": overhead.figures,
    "augmentation": augmentation_figures,
    "pruning": pruning.figures,
    "workers": workers_figures,
    "end-to-end": end_to_end.figures,
    "memory": memory.figures,
    "throughput": throughput.figures,
}
