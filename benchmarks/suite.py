"""The benchmarks `python -m benchmarks` runs, in order, each a function from `quick` to its
BENCHMARKS.md rows; the augmentation and workers modules are read through small adapters."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import (
    augmentation,
    end_to_end,
    memory,
    overfitting,
    overhead,
    population,
    pruning,
    throughput,
    verdicts,
    versus_peer,
    workers,
)
from benchmarks._common import TINY, Figure, command, fmt, median

FigureFn = Callable[..., list[Figure]]


def augmentation_figures(*, quick: bool = False) -> list[Figure]:
    repeats, epochs = (1, 1) if quick or TINY else (9, 4)
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
    """2 workers vs 1 on the default study, and on the same study without pruning: pruning
    decides against the trials finished so far, fewer of them while two run at once, so the
    two runs' trials differ in length; unpruned trials all run to early stopping.

    Each side runs once per sampler seed, in 1-2, 2-1, 1-2 order, medians reported: 2 workers
    draw their own parameters (one seed each), so one seed compares one draw with another.
    """
    trials, ddp_trials, seeds = (4, 2, (0,)) if quick else (20, 4, (0, 1, 2))
    cmd = command("benchmarks", "--only workers") + (" --quick" if quick else "")
    rows: list[Figure] = []
    rate_1 = 0.0
    for label, overrides in (("default study", ()), ("no pruning", ("pruner.name=none",))):
        samples: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for i, seed in enumerate(seeds):
            for n in (1, 2) if i % 2 == 0 else (2, 1):
                sets = (*overrides, f"sampler.seed={seed}")
                samples[n].append(workers.measure(trials=trials, workers=n, overrides=sets))
        rate = {n: median([r["trials/min"] for r in rs]) for n, rs in samples.items()}
        epochs = {n: median([r["epochs/min"] for r in rs]) for n, rs in samples.items()}
        per_trial = {n: epochs[n] / rate[n] for n in rate}
        speed = rate[2] / rate[1]
        rate_1 = rate_1 or rate[1]
        rows += [
            Figure(
                "workers",
                f"2 workers vs 1, {label}: finished trials/min ({trials} trials, sampler seeds "
                f"{', '.join(map(str, seeds))}; {per_trial[2]:.1f} vs {per_trial[1]:.1f} "
                "epochs per trial)",
                fmt(rate[2], "/min"),
                fmt(rate[1], "/min"),
                speed,
                f"≥ {workers.TARGET}×",
                speed >= workers.TARGET,
                cmd,
            ),
            Figure(
                "workers",
                f"2 workers vs 1, {label}: training epochs/min",
                fmt(epochs[2], "/min"),
                fmt(epochs[1], "/min"),
                epochs[2] / epochs[1],
                command=cmd,
            ),
        ]
    ddp = workers.measure(trials=ddp_trials, devices_per_trial=2)
    rows.append(
        Figure(
            "workers",
            f"DDP, `--devices-per-trial 2` on CPU (gloo), default study: trials/min "
            f"({ddp_trials} trials) vs 1 worker",
            fmt(ddp["trials/min"], "/min"),
            fmt(rate_1, "/min"),
            ddp["trials/min"] / rate_1,
            command=cmd,
        )
    )
    return rows


SUITE: dict[str, FigureFn] = {
    "overhead": overhead.figures,
    "augmentation": augmentation_figures,
    "pruning": pruning.figures,
    "workers": workers_figures,
    "end-to-end": end_to_end.figures,
    "peer": versus_peer.figures,
    "memory": memory.figures,
    "throughput": throughput.figures,
    "population": population.figures,
    "verdicts": verdicts.figures,
    "overfitting": overfitting.figures,
}
