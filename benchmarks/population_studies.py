"""Shipped studies trained as populations against one trial per Trainer, side by side.

    .venv/bin/python -m benchmarks.population_studies [--quick] [--configs default fnn-mnist1d]
        [--sizes 1 8] [--repeats 1]

Each config runs as `regzoo run CONFIG --population K --wandb disabled --set confirm=null` in a
fresh folder and storage (`_common.run_study_process`), once per size and repeat, the sizes in
ABBA order across repeats. The figures: finished trials per minute of wall time (process start to
exit), the best trial's val objective and test/acc (as `regzoo list` ranks trials), how many
trials were pruned, and whether a member's recorded `seconds` are its own: in each population
whose members ended at different epochs, the member that ended first's share of the longest
member's seconds against its share of the epochs. Its seconds end where it ended, so this is
above 1 only because the population's early epochs, with more members, cost more; had it
recorded its population's wall time, it would be 1 / its epoch share. A shipped config's
`population.size` is chosen from these rows.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks._common import REPO, Figure, command, finished, fmt, run_study_process

CONFIGS = {
    "default": REPO / "studies" / "configs" / "default.yaml",
    "fnn-mnist1d": REPO / "studies" / "configs" / "fnn-mnist1d.yaml",
    "cnn-mnist1d": REPO / "studies" / "configs" / "cnn-mnist1d.yaml",
    "rnn-mnist1d": REPO / "studies" / "configs" / "rnn-mnist1d.yaml",
}
QUICK_ARGS = [
    "--trials",
    "4",
    "--set",
    "trainer.max_epochs=2",
    "--set",
    "trainer.limit_train_batches=3",
]


def measure(name: str, size: int, *, quick: bool) -> dict[str, Any]:
    """One study run: its wall time, finished and pruned trials, and its best trial."""
    args = ["--population", str(size), "--wandb", "disabled", "--set", "confirm=null"]
    run = run_study_process(CONFIGS[name], args=args + (QUICK_ARGS if quick else []))
    done = finished(run)
    best = run.best
    return {
        "wall": run.wall,
        "own_seconds": own_seconds(done),
        "finished": len(done),
        "pruned": sum(t.state.name == "PRUNED" for t in run.trials),
        "per_minute": 60 * len(done) / run.wall,
        "value": best.value if best is not None else float("nan"),
        "test": best.user_attrs.get("test/acc", float("nan")) if best is not None else float("nan"),
    }


def own_seconds(trials: list[Any]) -> list[tuple[float, float]]:
    """Per population with members ending at different epochs: (seconds of the member that
    ended first / the longest member's) / (its epochs / the longest member's), and what that
    would be with its population's wall time as its seconds (1 / its epoch share)."""
    groups: dict[tuple[int, ...], list[Any]] = {}
    for t in trials:
        together = tuple(t.user_attrs.get("population") or ())
        if len(together) > 1 and "seconds" in t.user_attrs and t.user_attrs.get("epochs"):
            groups.setdefault(together, []).append(t)
    ratios = []
    for members in groups.values():
        first = min(members, key=lambda t: t.user_attrs["epochs"])
        last = max(members, key=lambda t: t.user_attrs["epochs"])
        if first.user_attrs["epochs"] < last.user_attrs["epochs"]:
            seconds = first.user_attrs["seconds"] / last.user_attrs["seconds"]
            epochs = first.user_attrs["epochs"] / last.user_attrs["epochs"]
            ratios.append((seconds / epochs, 1 / epochs))
    return ratios


def compare(
    names: list[str], sizes: list[int], *, repeats: int = 1, quick: bool = False
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every (config, size) run `repeats` times, sizes in ABBA order across repeats."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for name in names:
        for r in range(repeats):
            for size in sizes if r % 2 == 0 else reversed(sizes):
                out.setdefault((name, size), []).append(measure(name, size, quick=quick))
    return out


def figures(
    *, quick: bool = False, names: list[str] | None = None, sizes: list[int] | None = None
) -> list[Figure]:
    names = names or (["default"] if quick else list(CONFIGS))
    sizes = sizes or [1, 8]
    results = compare(names, sizes, quick=quick)
    rows = []
    for name in names:
        base = results[(name, sizes[0])]
        cmd = command(
            "benchmarks.population_studies", f"--configs {name}", "--sizes", *map(str, sizes)
        )
        for size in sizes[1:]:
            ours = results[(name, size)]
            rate, rate0 = (statistics.median(r["per_minute"] for r in x) for x in (ours, base))
            rows.append(
                Figure(
                    "populations",
                    f"`{name}`: finished trials per minute, population {size} vs 1",
                    fmt(rate, "/min"),
                    fmt(rate0, "/min"),
                    rate / rate0,
                    command=cmd,
                )
            )
            own = [x for r in ours for x in r["own_seconds"]]
            if own:
                rows.append(
                    Figure(
                        "populations",
                        f"`{name}`, population {size}: the first member to end, its share of the "
                        f"longest member's seconds / its share of the epochs ({len(own)} "
                        "populations), against the same with its population's wall time",
                        fmt(statistics.median(x for x, _ in own)),
                        fmt(statistics.median(w for _, w in own)),
                        command=cmd,
                    )
                )
            for key, label in (("value", "best val objective"), ("test", "best trial's test/acc")):
                rows.append(
                    Figure(
                        "populations",
                        f"`{name}`: {label}, population {size} vs 1",
                        _values(ours, key),
                        _values(base, key),
                        command=cmd,
                    )
                )
    return rows


def _values(runs: list[dict[str, Any]], key: str) -> str:
    return ", ".join(f"{r[key]:.4f}" for r in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    names = args.configs or (["default"] if args.quick else list(CONFIGS))
    results = compare(names, args.sizes, repeats=args.repeats, quick=args.quick)
    print(
        "| config | population | wall s | finished | pruned | trials/min | best value | test/acc "
        "| own seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (name, size), runs in results.items():
        for r in runs:
            own = ", ".join(f"{x:.2f} (wall {w:.1f})" for x, w in r["own_seconds"]) or "-"
            print(
                f"| {name} | {size} | {r['wall']:.1f} | {r['finished']} | {r['pruned']} | "
                f"{r['per_minute']:.2f} | {r['value']:.4f} | {r['test']:.4f} | {own} |"
            )


if __name__ == "__main__":
    main()
