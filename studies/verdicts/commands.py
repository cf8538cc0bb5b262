"""`regzoo confirm` and `regzoo ablate` (and the confirmation that ends a study whose config has
`confirm:`): plan the runs, train the missing ones, record the request, print the tables."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.loop.study import study_folder
from regzoo.studies.verdicts import ablate as ablate_mod
from regzoo.studies.verdicts import confirm as confirm_mod
from regzoo.studies.verdicts.ablate import Ablation
from regzoo.studies.verdicts.confirm import Confirmation
from regzoo.studies.verdicts.run import DEFAULT_POPULATION, missing_points, train_points
from regzoo.studies.verdicts.store import (
    ABLATE_ATTR,
    CONFIRM_ATTR,
    Point,
    open_companion,
    write_request,
)
from regzoo.studies.verdicts.tables import (
    METRIC,
    OVERFITTING,
    ablation_rows,
    bought_line,
    comparison_line,
    confirm_rows,
    fmt_cell,
    interval,
)


def confirm_study(
    study: optuna.Study,
    url: str,
    *,
    top: int = confirm_mod.DEFAULT_TOP,
    seeds: int = confirm_mod.DEFAULT_SEEDS,
    wandb_mode: str = "disabled",
    console: Console | None = None,
    population: int | None = None,
    trials: list[int] | None = None,
) -> Confirmation:
    """Retrain the top `top` trials' configurations, or trials `trials`', with `seeds` new
    seeds; the confirmation. `population`: runs per Trainer at most (default: all that batch;
    1: one run a Trainer)."""
    console = console or Console()
    cfg, points, request = confirm_mod.plan(study, top, seeds, trials)
    companion = _train(study, url, cfg.runs_dir, points, "confirm", wandb_mode, console, population)
    write_request(study, CONFIRM_ATTR, request)
    result = confirm_mod.read_confirmation(study, companion)
    assert result is not None
    print_confirmation(result, console)
    return result


def ablate_study(
    study: optuna.Study,
    url: str,
    *,
    seeds: int = confirm_mod.DEFAULT_SEEDS,
    wandb_mode: str = "disabled",
    console: Console | None = None,
    population: int | None = None,
    trial: int | None = None,
) -> Ablation:
    """Train the best trial's configuration without each regularizer (trial `trial`'s, where
    given); the ablation. `population`: runs per Trainer at most (default: all that batch; 1:
    one run a Trainer)."""
    console = console or Console()
    cfg, _, points, request = ablate_mod.plan(study, seeds, trial)
    companion = _train(study, url, cfg.runs_dir, points, "ablate", wandb_mode, console, population)
    write_request(study, ABLATE_ATTR, request)
    result = ablate_mod.read_ablation(study, companion)
    assert result is not None
    print_ablation(result, console)
    return result


def _train(
    study: optuna.Study,
    url: str,
    runs_dir: str | Path,
    points: list[Point],
    kind: str,
    wandb_mode: str,
    console: Console,
    population: int | None,
) -> optuna.Study:
    companion = open_companion(study, url)
    missing = len(missing_points(companion, points))
    configs = len({p.label for p in points})
    seeds = sorted({p.seed for p in points})
    console.print(
        f"[bold]{kind}[/] {study.study_name}: {configs} configuration(s) x {len(seeds)} seeds "
        f"({seeds[0]}-{seeds[-1]}); {missing} of {len(points)} run(s) to train",
        soft_wrap=True,
    )
    folder = study_folder(study, runs_dir) / "seeds"
    train_points(
        companion,
        points,
        url=url,
        folder=folder,
        kind=kind,
        wandb_mode=wandb_mode,
        console=console,
        population=population or DEFAULT_POPULATION,
    )
    return companion


def print_confirmation(c: Confirmation, console: Console) -> None:
    rows = confirm_rows(c)
    table = Table(title=f"{c.study}: top configurations over {len(c.seeds)} new seeds")
    overfit = [f"{m} [95% CI]" for m in OVERFITTING]
    for col in ("configuration", "study value", "runs", f"{METRIC} mean ± sd", "95% CI"):
        table.add_column(col)
    for col in (*overfit, "params"):
        table.add_column(col)
    for cand, row in zip(c.candidates, rows, strict=True):
        s = cand.summary(METRIC, c.seeds)
        table.add_row(
            row["configuration"],
            fmt_cell(row["study value"]),
            row["runs"],
            f"{fmt_cell(s.mean)} ± {fmt_cell(s.std)}",
            f"[{fmt_cell(s.low)}, {fmt_cell(s.high)}]",
            *(row[col] for col in overfit),
            row["parameters"],
        )
    console.print(table)
    line = comparison_line(c)
    if line:
        console.print(line, soft_wrap=True)
    for label, seed in c.diverged:
        console.print(f"[yellow]{label}, seed {seed}: diverged[/]")
    best = c.candidates[0].summary(METRIC, c.seeds)
    if not math.isnan(best.mean):
        console.print(
            f"[bold]confirmed[/] {c.candidates[0].label}: {METRIC} "
            f"{interval(best)} (mean [95% CI]) over {best.n} seeds",
            soft_wrap=True,
        )


def print_ablation(a: Ablation, console: Console) -> None:
    table = Table(
        title=f"{a.study}: what each regularizer of trial {a.trial} bought "
        f"({len(a.seeds)} seeds; effect = full - variant)"
    )
    overfit = [f"{m} effect [95% CI]" for m in OVERFITTING]
    for col in ("variant", "setting", "runs", f"{METRIC} mean ± sd", "effect [95% CI]", "p"):
        table.add_column(col)
    for col in overfit:
        table.add_column(col)
    for row in ablation_rows(a):
        effect = "-"
        if not math.isnan(row["effect"]):
            effect = (
                f"{row['effect']:+.4f} [{row['effect 95% CI low']:+.4f}, "
                f"{row['effect 95% CI high']:+.4f}]"
            )
        table.add_row(
            row["variant"],
            row["setting"],
            row["runs"],
            f"{fmt_cell(row[f'{METRIC} mean'])} ± {fmt_cell(row[f'{METRIC} sd'])}",
            effect,
            fmt_cell(row["p"]),
            *(row[col] for col in overfit),
        )
    console.print(table)
    console.print(
        "effect > 0: the regularizer raised test accuracy; an interval that holds 0 is within "
        "seed noise (paired t-test); a gap/acc effect < 0 closed the generalization gap, a "
        "test/ece effect < 0 made the model better calibrated"
    )
    for variant in a.variants:
        console.print(bought_line(a, variant), soft_wrap=True)


def confirm_after_run(
    study: optuna.Study,
    cfg: StudyConfig,
    url: str,
    wandb_mode: str,
    console: Console,
    population: int | None = None,
) -> None:
    """The end of `regzoo run` for a config with `confirm:` (nothing without it); its runs
    batch unless `population` (the run's `--population`) says otherwise."""
    if cfg.confirm is not None:
        confirm_study(
            study,
            url,
            top=cfg.confirm.top,
            seeds=cfg.confirm.seeds,
            wandb_mode=wandb_mode,
            console=console,
            population=population,
        )
