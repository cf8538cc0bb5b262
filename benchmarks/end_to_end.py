"""End to end: what a user gets from `make study`, and how soon the MNIST-1D CNN study reaches
the published CNN's 94% test accuracy.

    .venv/bin/python -m benchmarks.end_to_end [--quick] [--budget 300]

`make study` (with .venv installed) is `regzoo run studies/configs/default.yaml`: it
runs here as that command with its defaults (W&B offline without a login) and a fresh storage,
timed from process start to exit, its confirmation over 5 seeds included; the figures are its
best trial's test accuracy (one seed) and the confirmed mean with its 95% interval. The
MNIST-1D study (`studies/configs/cnn-mnist1d.yaml`, W&B off) runs until a finished trial's
test/acc reaches 0.94 or `--budget` seconds pass; the figure is the time from process start to
that trial's end, or the best test accuracy reached within the budget.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks._common import REPO, Figure, StudyRun, finished, fmt, run_study_process

DEFAULT = REPO / "studies" / "configs" / "default.yaml"
MNIST1D = REPO / "studies" / "configs" / "cnn-mnist1d.yaml"
GOAL = 0.94


def make_study(*, quick: bool = False) -> StudyRun:
    quick_args = ["--trials", "3", "--set", "trainer.max_epochs=3", "--set", "confirm.seeds=2"]
    return run_study_process(DEFAULT, args=quick_args if quick else [])


def reached(trials: list[Any]) -> Any:
    """The first trial (by end time) whose test accuracy reaches the goal, if any."""
    hits = [t for t in trials if t.user_attrs.get("test/acc", 0.0) >= GOAL and t.datetime_complete]
    return min(hits, key=lambda t: t.datetime_complete) if hits else None


def time_to_goal(*, budget_s: float, quick: bool = False) -> dict[str, Any]:
    args = ["--wandb", "disabled"] + (["--set", "trainer.max_epochs=2"] if quick else [])
    run = run_study_process(
        MNIST1D, args=args, stop=lambda trials: reached(trials) is not None, timeout_s=budget_s
    )
    hit = reached(run.trials)
    tested = [t.user_attrs["test/acc"] for t in run.trials if "test/acc" in t.user_attrs]
    return {
        "seconds": hit.datetime_complete.timestamp() - run.started if hit else None,
        "trial": hit.number if hit else None,
        "best": max(tested, default=float("nan")),
        "trials": len(finished(run)),
        "wall": run.wall,
    }


def figures(*, quick: bool = False) -> list[Figure]:
    budget = 60.0 if quick else 240.0
    run = make_study(quick=quick)
    best = run.best
    test_acc = best.user_attrs.get("test/acc", float("nan")) if best is not None else float("nan")
    cmd = command_of(quick)
    rows = [
        Figure(
            "end-to-end",
            f"`make study`: wall time of {len(finished(run))} trials, start to exit",
            fmt(run.wall, "s"),
            command=cmd,
        ),
        Figure("end-to-end", "`make study`: best trial's test/acc", f"{test_acc:.4f}", command=cmd),
    ]
    if run.confirmed is not None:
        c = run.confirmed
        rows.append(
            Figure(
                "end-to-end",
                f"`make study`: confirmed test/acc, mean [95% CI] over {c.n} seeds",
                f"{c.mean:.4f} [{c.low:.4f}, {c.high:.4f}]",
                command=cmd,
            )
        )
    goal = time_to_goal(budget_s=budget, quick=quick)
    extra = " --set trainer.max_epochs=2" if quick else ""
    cmd = f".venv/bin/regzoo run studies/configs/cnn-mnist1d.yaml --wandb disabled{extra}"
    if goal["seconds"] is not None:
        ours = f"{fmt(goal['seconds'], 's')} (trial {goal['trial']})"
    else:
        ours = f"not within {budget:.0f} s ({goal['trials']} trials); best {goal['best']:.4f}"
    rows.append(
        Figure(
            "end-to-end",
            f"mnist1d cnn study: time to test/acc ≥ {GOAL} (published CNN: 94%)",
            ours,
            command=cmd,
        )
    )
    return rows


def command_of(quick: bool) -> str:
    if quick:
        return (
            ".venv/bin/regzoo run studies/configs/default.yaml --trials 3 "
            "--set trainer.max_epochs=3 --set confirm.seeds=2"
        )
    return "make study"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the mnist1d run")
    args = parser.parse_args()
    run = make_study(quick=args.quick)
    best = run.best
    print(f"make study: {run.wall:.1f} s, {len(finished(run))} trials, best trial test/acc", end="")
    print(f" {best.user_attrs.get('test/acc', float('nan')):.4f}" if best else " -", end="")
    c = run.confirmed
    print(f"; confirmed {c.mean:.4f} [{c.low:.4f}, {c.high:.4f}] n={c.n}" if c else "")
    goal = time_to_goal(budget_s=args.budget, quick=args.quick)
    print(f"mnist1d cnn: {goal}")


if __name__ == "__main__":
    main()
