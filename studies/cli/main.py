"""The regzoo command line: `regzoo run|train|confirm|ablate|list|models|report|export|...`
(also `python -m regzoo ...`).

A user's mistake (bad config, bad storage URL, unknown study) prints one line and exits 2.
Process-wide settings a command needs (W&B's quiet console) are made here, at the entry point,
never by the library calls below it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from regzoo._checks import UserError, one_line
from regzoo.studies.config.schema import DEFAULT_STORAGE, Confirm, StudyConfig
from regzoo.studies.executor.memory import keep_freed_memory
from regzoo.studies.scaling.options import WORKER_ENV, RunOptions

# Heavy imports (torch, Lightning, Optuna) wait for the command that needs them, so that
# `regzoo --help` and `regzoo --version` answer at once (the schema needs pydantic alone).

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(UserError):
    """A mistake on the command line that is not about a config file."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regzoo", description=__doc__)
    p.add_argument("--version", action="version", version=f"regzoo {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="tune a config's search space with Optuna")
    _config_args(run)
    run.add_argument("--trials", type=_positive_int, help="finished trials to reach")
    run.add_argument("--timeout", type=float, help="stop starting trials after S seconds")
    run.add_argument(
        "--wandb",
        choices=("online", "offline", "disabled"),
        help="W&B mode (default: online with a login, else offline)",
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress bars")
    run.add_argument(
        "--workers", type=_positive_int, default=1, help="trial processes sharing the storage"
    )
    run.add_argument(
        "--devices-per-trial", type=_positive_int, help="train each trial with DDP on K devices"
    )
    run.add_argument(
        "--population",
        type=_positive_int,
        help="train K trials at a time as one batched model (1: one trial per Trainer)",
    )

    train = sub.add_parser("train", help="one run with the config's fixed values, no search")
    _config_args(train)
    train.add_argument("--wandb", choices=("online", "offline", "disabled"))

    lst = sub.add_parser("list", help="studies in a storage, with trial counts")
    lst.add_argument("--storage", default=DEFAULT_STORAGE)

    sub.add_parser(
        "models",
        help="model and dataset names (registered, entry points) and where each comes from",
    )

    rep = sub.add_parser("report", help="plots, summary.md and index.html for a study")
    rep.add_argument("name", help="study name (the config's name:)")
    rep.add_argument("--storage", default=DEFAULT_STORAGE)
    rep.add_argument("--out", type=Path, help="folder (default: report/ beside the trials)")
    rep.add_argument(
        "--wandb",
        choices=("online", "offline", "disabled"),
        help="W&B mode of the study run it refreshes (default: the study config's, else "
        "online with a login, else offline)",
    )

    exp = sub.add_parser(
        "export", help="write a study's best model (raw inputs in) as hub|pt2|onnx|ckpt"
    )
    exp.add_argument("name", help="study name (the config's name:)")
    exp.add_argument("--format", dest="fmt", required=True, choices=("hub", "pt2", "onnx", "ckpt"))
    exp.add_argument("--out", type=Path, help="file or folder (default: export/ beside the trials)")
    exp.add_argument(
        "--push-to-hub", metavar="REPO", help="with --format hub: upload the folder to REPO"
    )
    exp.add_argument("--storage", default=DEFAULT_STORAGE)
    exp.add_argument(
        "--trial",
        type=_non_negative_int,
        metavar="N",
        help="export complete trial N (default: the best; a multi-objective study has none, "
        "pick from its Pareto front)",
    )
    exp.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a temperature on the validation split, store it in the model, print the "
        "test ECE before and after",
    )

    conf = sub.add_parser(
        "confirm", help="retrain the top trials' configurations with new seeds; mean and 95%% CI"
    )
    conf.add_argument("name", help="study name (the config's name:)")
    which = conf.add_mutually_exclusive_group()
    which.add_argument(
        "--top", type=_positive_int, help="configurations (default: the config's, else 2)"
    )
    which.add_argument(
        "--trials",
        type=_trial_numbers,
        metavar="N,M",
        help="confirm these complete trials' configurations, in this order (e.g. from a "
        "Pareto front)",
    )
    conf.add_argument(
        "--seeds", type=_at_least_two, help="new seeds each (default: the config's, else 5)"
    )
    _verdict_args(conf)

    abl = sub.add_parser(
        "ablate", help="train the best configuration without each regularizer; effects, 95%% CI"
    )
    abl.add_argument("name", help="study name (the config's name:)")
    abl.add_argument(
        "--seeds", type=_at_least_two, help="seeds per variant (default: the config's, else 5)"
    )
    abl.add_argument(
        "--trial",
        type=int,
        help="the complete trial to ablate (default: the best; in a study of several objectives, "
        "the first of its Pareto front)",
    )
    _verdict_args(abl)

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on a storage")
    dash.add_argument("--storage", default=DEFAULT_STORAGE)
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)

    lecture = sub.add_parser("experiment", help="run a lecture experiment (NAME or all)")
    lecture.add_argument("name", help="experiment name (see studies/experiments/), or all")
    lecture.add_argument("--quick", action="store_true", help="short: few epochs, less data")
    lecture.add_argument("--storage", help="default: sqlite:///runs/studies.db")
    lecture.add_argument("--wandb", choices=("online", "offline", "disabled"))
    lecture.add_argument(
        "--population",
        type=_positive_int,
        help="train at most K settings at a time as one batched model (default: 64; "
        "1: one setting per Trainer)",
    )
    lecture.add_argument(
        "--workers",
        type=_positive_int,
        help="processes training populations side by side, one thread each (default: one a "
        "usable core on Linux, else 1)",
    )

    wsp = sub.add_parser(
        "wandb-workspace", help="save a W&B workspace view of a study's trial runs (online)"
    )
    wsp.add_argument("name", help="study name (the config's name:)")
    wsp.add_argument("--storage", default=DEFAULT_STORAGE)
    wsp.add_argument("--project", help="W&B project (default: the config's wandb.project)")
    wsp.add_argument("--entity", help="W&B entity (default: the config's, else the login's)")
    return p


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="study YAML, e.g. studies/configs/default.yaml")
    p.add_argument("--storage", help="sqlite:///x.db, journal:///x.log or postgresql://...")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (value parsed as YAML); repeatable",
    )


def _verdict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    p.add_argument(
        "--population",
        type=_positive_int,
        metavar="N",
        help="runs trained as one batched model at most (default: every run that batches; "
        "1: one run per Trainer)",
    )
    p.add_argument(
        "--wandb",
        choices=("online", "offline", "disabled"),
        help="W&B mode of the runs and the study run (default: the study config's, else online "
        "with a login, else offline)",
    )


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (an interval needs two seeds), got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _trial_numbers(text: str) -> list[int]:
    """`--trials 3,7`: distinct trial numbers, comma-separated."""
    try:
        numbers = [_non_negative_int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected trial numbers such as 3,7, got {text!r}"
        ) from None
    if len(set(numbers)) != len(numbers):
        raise argparse.ArgumentTypeError(f"a trial listed twice in {text!r}")
    return numbers


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.config.load import load_config
    from regzoo.studies.scaling.workers import run

    # `--population N` is the last override: the config is checked with it (the default study's
    # own population must not refuse `--population 1 --set trainer.precision=16-mixed`), before
    # any worker, folder or storage.
    overrides = [*args.overrides]
    if args.population is not None:
        overrides.append(f"population.size={args.population}")
    cfg = load_config(args.config, overrides=overrides)
    opts = RunOptions(
        config=args.config,
        overrides=tuple(overrides),
        storage=args.storage,
        trials=args.trials,
        timeout=args.timeout,
        wandb=args.wandb,
        progress=not args.no_progress,
        workers=args.workers,
        devices_per_trial=args.devices_per_trial,
        worker=os.environ.get(WORKER_ENV),
        population=args.population,
    )
    return run(opts, cfg, console)


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.config.load import load_config
    from regzoo.studies.executor import Job, execute
    from regzoo.studies.loop.preflight import check_runs_dir
    from regzoo.studies.trial import tracking
    from regzoo.studies.trial.console import quiet_training
    from regzoo.studies.trial.spec import TrialSpec

    # One run: the config's population (the default study's 8) does not apply to it.
    cfg = load_config(args.config, overrides=[*args.overrides, "population.size=1"])
    if cfg.trainer.devices != 1:
        raise UsageError(
            f"trainer.devices={cfg.trainer.devices}: `train` runs on one device; "
            "allowed: trainer.devices=1"
        )
    check_runs_dir(cfg.runs_dir)
    mode = tracking.resolve_mode(args.wandb or cfg.wandb.mode)
    folder = _fresh_folder(cfg.study_dir, "train")
    spec = TrialSpec(config=cfg, params={}, run_dir=folder, seed=cfg.seed, run_name="train")
    with quiet_training():
        [result] = execute([Job([spec], batched=False)], wandb_mode=mode)
    if result.error is not None and result.diverged_epoch is None:
        console.print(f"[red]train failed:[/] {result.error}", soft_wrap=True)
        return 1
    console.print(
        f"{cfg.objectives[0].metric}={result.value:.4f} "
        + " ".join(
            f"{k}={v:.4f}" for k, v in result.metrics.items() if k.startswith(("test/", "gap/"))
        )
        + f" epochs={result.epochs}"
        + (f" ({result.error})" if result.error else "")
    )
    console.print(f"checkpoint: {result.checkpoint}", soft_wrap=True)
    if mode == "offline":
        console.print(f"wandb offline: {tracking.sync_command(Path(cfg.runs_dir))}", soft_wrap=True)
    return 0


def _fresh_folder(parent: Path, stem: str) -> Path:
    """`parent/stem-<n>` with the first n not taken: a run never writes into an earlier one's."""
    n = 1
    while (parent / f"{stem}-{n}").exists():
        n += 1
    return parent / f"{stem}-{n}"


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    import optuna
    from optuna.trial import TrialState
    from rich.table import Table

    from regzoo.studies.loop.read import (
        first_value,
        is_multi_objective,
        objective_names,
        open_existing,
        ranked_trials,
    )
    from regzoo.studies.verdicts.read import read_verdicts
    from regzoo.studies.verdicts.store import COMPANION_SUFFIX, is_companion
    from regzoo.studies.verdicts.tables import interval

    storage = open_existing(args.storage)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    table = Table(title=f"studies in {args.storage}")
    columns = ("study", "objective", "trials", "complete", "pruned", "failed", "running", "best")
    for col in (*columns, "confirmed"):
        table.add_column(col)
    names = set(optuna.get_all_study_names(storage=storage))
    for name in sorted(names):
        if is_companion(name) and name.removesuffix(COMPANION_SUFFIX) in names:
            continue  # its runs are the `confirmed` column of its study's row
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        ranked = ranked_trials(study)
        objective = ", ".join(
            f"{d.name.lower()} {name}"
            for d, name in zip(study.directions, objective_names(study), strict=True)
        )
        best_cell = f"{first_value(ranked[0]):.4f} (trial {ranked[0].number})" if ranked else "-"
        if ranked and is_multi_objective(study):  # no best: how many trials its front holds
            best_cell = f"Pareto front of {len(study.best_trials)}"
        best = read_verdicts(study, args.storage).confirmed()
        confirmed = f"{interval(best)} n={best.n}" if best is not None and best.n else "-"
        table.add_row(
            name,
            objective.strip(),
            str(len(trials)),
            *(str(sum(t.state == s for t in trials)) for s in states),
            best_cell,
            confirmed,
        )
    console.print(table)
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    """Every model and dataset name this installation knows, and where it comes from (nothing
    is imported for an entry point); any other class is named by import path."""
    from rich.table import Table

    from regzoo.datamodules import datamodule_sources
    from regzoo.zoo import model_sources

    table = Table(title="models and datasets (or any class as package.module:Name)")
    for col in ("kind", "name", "from"):
        table.add_column(col)
    for kind, sources in (("model", model_sources()), ("dataset", datamodule_sources())):
        for name, where in sources.items():
            table.add_row(kind, name, where)
    console.print(table)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    import json

    from regzoo.studies.loop.read import load_study, study_dir
    from regzoo.studies.results.report import write_report
    from regzoo.studies.results.wandb_study import log_study, print_written
    from regzoo.studies.trial import tracking

    study = load_study(args.name, args.storage)
    out = args.out or study_dir(study) / "report"
    report = write_report(study, out, storage=args.storage)
    for name, caption in report.images.items():
        console.print(f"  {out / name}  [dim]{caption}[/]", soft_wrap=True)
    for caption, reason in report.skipped.items():
        console.print(f"  [yellow]not drawn[/] {caption}: {reason}", soft_wrap=True)
    console.print(f"[bold]report[/] {out / 'index.html'}  ({out / 'summary.md'})", soft_wrap=True)
    config = json.loads(study.user_attrs.get("config", "{}") or "{}")
    tracked = config.get("wandb", {}) if isinstance(config, dict) else {}
    mode = tracking.resolve_mode(args.wandb or tracked.get("mode"))
    save_dir = study_dir(study)
    found = log_study(
        study,
        mode=mode,
        project=tracked.get("project") or "regzoo",
        entity=tracked.get("entity"),
        save_dir=save_dir,
        report_dir=out,
        report_images=report.images,
        storage=args.storage,
        console=console,
    )
    print_written(found, mode, save_dir, console)
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.results.export import export_best

    exported = export_best(
        args.name,
        fmt=args.fmt,
        storage=args.storage,
        out=args.out,
        push_to_hub=args.push_to_hub,
        calibrate=args.calibrate,
        trial_number=args.trial,
    )
    if exported.calibration is not None:
        console.print(exported.calibration.line(), soft_wrap=True)
    console.print(f"[bold]exported[/] {args.fmt}: {exported.path}", soft_wrap=True)
    return 0


def cmd_confirm(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.verdicts.commands import confirm_study

    study, cfg, mode = _verdict_study(args)
    defaults = cfg.confirm or Confirm()
    confirm_study(
        study,
        args.storage,
        top=args.top or defaults.top,
        trials=args.trials,
        seeds=args.seeds or defaults.seeds,
        wandb_mode=mode,
        console=console,
        population=args.population,
    )
    _refresh_study_run(study, cfg, mode, args.storage, console)
    return 0


def cmd_ablate(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.verdicts.commands import ablate_study

    study, cfg, mode = _verdict_study(args)
    seeds = args.seeds or (cfg.confirm or Confirm()).seeds
    ablate_study(
        study,
        args.storage,
        seeds=seeds,
        wandb_mode=mode,
        console=console,
        population=args.population,
        trial=args.trial,
    )
    _refresh_study_run(study, cfg, mode, args.storage, console)
    return 0


def _verdict_study(args: argparse.Namespace) -> tuple[Any, StudyConfig, str]:
    from regzoo.studies.loop.preflight import check_runs_dir
    from regzoo.studies.loop.read import load_study
    from regzoo.studies.trial import tracking
    from regzoo.studies.verdicts.store import stored_config

    study = load_study(args.name, args.storage)
    cfg = stored_config(study)
    check_runs_dir(cfg.runs_dir)
    return study, cfg, tracking.resolve_mode(args.wandb or cfg.wandb.mode)


def _refresh_study_run(
    study: Any, cfg: StudyConfig, mode: str, storage: str, console: Console
) -> None:
    from regzoo.studies.results.wandb_study import log_study_after_run

    log_study_after_run(study, cfg, mode, console, storage=storage)


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from optuna_dashboard import run_server

    from regzoo.studies.loop.read import open_existing

    storage = open_existing(args.storage)
    console.print(
        f"optuna-dashboard on http://{args.host}:{args.port} for {args.storage} (Ctrl-C to stop)"
    )
    run_server(storage, host=args.host, port=args.port)
    return 0


def cmd_experiment(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.executor.pool import WorkerPool
    from regzoo.studies.executor.threads import usable_cores

    start = time.perf_counter()
    workers = args.workers or usable_cores()  # one process a core, each on one thread
    with contextlib.ExitStack() as stack:
        # Started before torch is imported here: the workers' imports overlap this process's.
        pool = stack.enter_context(WorkerPool(workers, threads=1)) if workers > 1 else None
        from regzoo.studies.experiments import get_experiment, list_experiments, run_experiments

        names = list_experiments() if args.name == "all" else [args.name]
        try:
            experiments = [get_experiment(name) for name in names]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        run_experiments(
            experiments,
            quick=args.quick,
            storage=args.storage,
            wandb=args.wandb,
            population=args.population,
            workers=workers,
            pool=pool,
            console=console,
        )
    seconds = time.perf_counter() - start
    console.print(f"[bold]{len(experiments)} experiment(s)[/] in {seconds:.0f} s")
    return 0


def cmd_wandb_workspace(args: argparse.Namespace, console: Console) -> int:
    from regzoo.studies.results.workspace import save_workspace

    url = save_workspace(args.name, args.storage, project=args.project, entity=args.entity)
    console.print(f"[bold]W&B workspace[/] {url}", soft_wrap=True)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "run": cmd_run,
    "train": cmd_train,
    "list": cmd_list,
    "models": cmd_models,
    "report": cmd_report,
    "export": cmd_export,
    "confirm": cmd_confirm,
    "ablate": cmd_ablate,
    "dashboard": cmd_dashboard,
    "experiment": cmd_experiment,
    "wandb-workspace": cmd_wandb_workspace,
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("regzoo")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_freed_memory()  # a training process reuses what it frees (studies.loop.memory)
    console = Console()
    err = Console(stderr=True)
    try:
        from regzoo.studies.trial.console import quiet_training

        with quiet_training():  # for the whole command: opening a study logs too
            return COMMANDS[args.command](args, console)
    except UserError as exc:
        # A config key may hold rich markup (`[/x]`): printed as text, never read as markup.
        err.print(f"[red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if WORKER_ENV not in os.environ:  # a worker's parent says it once for all of them
            err.print("\ninterrupted: finished trials are stored; run the same command to resume")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
