"""What pruning saves: the default study to 30 finished trials with each pruner, `none` (every
trial trains until early stopping or max_epochs), `median` and `hyperband`.

    .venv/bin/python -m benchmarks.pruning [--trials 30] [--quick | --replay]

Each study runs as `regzoo run studies/configs/default.yaml --set pruner.name=P`
with W&B off and a fresh SQLite storage. Figures: training epochs run by all trials together
(the trials' `epochs` attribute), wall time, and the best validation accuracy. The sampler and
every trial's training are seeded, so epochs and accuracies repeat exactly from run to run;
only the wall time is the machine's. Target: at least 2.5x fewer epochs than `none`, with the
best validation accuracy within 0.5 points of its. `--replay` runs `none` and feeds its trials'
learning curves through other settings of both pruners (see `replay`).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks._common import REPO, Figure, StudyRun, finished, fmt, run_study_process
from regzoo.studies import load_config

CONFIG = REPO / "studies" / "configs" / "default.yaml"
PRUNERS = ("none", "median", "hyperband")
TARGET_EPOCHS, TARGET_POINTS = 2.5, 0.5
QUICK_EPOCHS = 4  # max_epochs of the --quick studies
_runs: dict[tuple[str, int, bool], StudyRun] = {}  # the memory benchmark reuses hyperband's


def study(pruner: str, *, trials: int, quick: bool = False) -> StudyRun:
    """The default study with `pruner`, run once per process for each setting."""
    key = (pruner, trials, quick)
    if key not in _runs:
        # The search alone: the default study's confirmation is not what is measured here.
        args = ["--wandb", "disabled", "--set", f"pruner.name={pruner}", "--set", "confirm=null"]
        if quick:
            args += ["--set", f"trainer.max_epochs={QUICK_EPOCHS}"]
        _runs[key] = run_study_process(CONFIG, trials=trials, args=args)
    return _runs[key]


def summary(run: StudyRun) -> dict[str, Any]:
    done = finished(run)
    values = [t.value for t in done if t.value is not None]
    pruned = [t for t in done if t.state.name == "PRUNED"]
    return {
        "trials": len(done),
        "pruned": len(pruned),
        "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in done),
        "pruned epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in pruned),
        "wall": run.wall,
        "best": max(values) if values else float("nan"),
    }


def measure(*, trials: int = 30, quick: bool = False) -> dict[str, dict[str, Any]]:
    return {p: summary(study(p, trials=trials, quick=quick)) for p in PRUNERS}


def figures(*, quick: bool = False) -> list[Figure]:
    trials = 4 if quick else 30
    result = measure(trials=trials, quick=quick)
    none = result["none"]
    sets = "--set pruner.name={none|median|hyperband} --set confirm=null --wandb disabled"
    cmd = f".venv/bin/regzoo run studies/configs/default.yaml --trials {trials} {sets}"
    rows = [
        Figure(
            "pruning",
            f"`none`: epochs, wall time, best val/acc of {trials} trials",
            f"{none['epochs']} epochs, {fmt(none['wall'], 's')}, {none['best']:.4f}",
            command=cmd,
        )
    ]
    for pruner in ("median", "hyperband"):
        r = result[pruner]
        saved = none["epochs"] / max(r["epochs"], 1)
        points = 100 * (none["best"] - r["best"])
        met = saved >= TARGET_EPOCHS and points <= TARGET_POINTS
        rows += [
            Figure(
                "pruning",
                f"`{pruner}`: training epochs of {trials} trials, `none` / ours; "
                f"{r['pruned']} pruned trials ran {r['pruned epochs']} of them",
                str(r["epochs"]),
                str(none["epochs"]),
                saved,
                f"≥ {TARGET_EPOCHS}× and best val/acc within {TARGET_POINTS} points",
                met,
                cmd,
            ),
            Figure(
                "pruning",
                f"`{pruner}`: best val/acc (points below `none`: {points:+.2f})",
                f"{r['best']:.4f}",
                f"{none['best']:.4f}",
                command=cmd,
            ),
            Figure(
                "pruning",
                f"`{pruner}`: wall time of the study, `none` / ours",
                fmt(r["wall"], "s"),
                fmt(none["wall"], "s"),
                none["wall"] / r["wall"],
                command=cmd,
            ),
        ]
    return rows


def replay(
    trials: list[Any], pruner: optuna.pruners.BasePruner, *, study_name: str
) -> tuple[int, int, float]:
    """Feed finished unpruned trials' learning curves, in their order, through `pruner`: the
    epochs it would have let them run, how many it prunes, and the best value it keeps. The
    sampler's answer to pruning (other later trials) is left out: a what-if for pruner settings,
    each then checked by a real study. Hyperband puts a trial in a bracket by hashing the study
    name and trial number, so `study_name` must be the real study's."""
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name=study_name)
    epochs, pruned, best = 0, 0, -math.inf
    for frozen in trials:
        trial = study.ask()
        values = []
        for step, value in sorted(frozen.intermediate_values.items()):
            trial.report(value, step)
            values.append(value)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                pruned += 1
                break
        else:
            study.tell(trial, max(values))
            best = max(best, max(values))
        epochs += len(values)
    return epochs, pruned, best


def candidates(max_epochs: int) -> dict[str, optuna.pruners.BasePruner]:
    """Pruner settings the config can express, around its defaults."""
    p = optuna.pruners
    grid: dict[str, optuna.pruners.BasePruner] = {}
    for startup, warmup in ((5, 3), (5, 1), (3, 1), (2, 1)):
        grid[f"median, {startup} startup trials, warm-up {warmup}"] = p.MedianPruner(
            startup, warmup
        )
    for min_resource, factor in ((1, 3), (2, 3), (3, 3), (1, 4), (2, 4), (1, 5)):
        name = f"hyperband, min_resource {min_resource}, reduction_factor {factor}"
        grid[name] = p.HyperbandPruner(min_resource, max_epochs, factor)
    return grid


def print_replay(*, trials: int) -> None:
    run = study("none", trials=trials)
    done = sorted(finished(run), key=lambda t: t.number)
    total = sum(len(t.intermediate_values) for t in done)
    best = max(t.value for t in done if t.value is not None)
    print(f"`none`: {total} epochs, best {best:.4f}; replayed through each pruner:")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, pruner in candidates(max_epochs=30).items():
        epochs, pruned, kept = replay(done, pruner, study_name=load_config(CONFIG).name)
        print(
            f"  {name:<46} {epochs:>4} epochs ({total / epochs:.2f}x), {pruned:>2} pruned, "
            f"best {kept:.4f} ({100 * (best - kept):.2f} points below)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help=f"max_epochs={QUICK_EPOCHS}")
    parser.add_argument(
        "--replay", action="store_true", help="replay `none`'s trials through other settings"
    )
    args = parser.parse_args()
    if args.replay:
        print_replay(trials=args.trials)
        return
    result = measure(trials=args.trials, quick=args.quick)
    print(f"{'pruner':<10} {'trials':>6} {'pruned':>6} {'epochs':>6} {'wall s':>7} {'best':>7}")
    for name, r in result.items():
        print(
            f"{name:<10} {r['trials']:>6} {r['pruned']:>6} {r['epochs']:>6} {r['wall']:>7.1f} "
            f"{r['best']:>7.4f}  (pruned trials: {r['pruned epochs']} epochs)"
        )


if __name__ == "__main__":
    main()
