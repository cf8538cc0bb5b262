"""The regzoo command line: `python -m studies run|train|list|dashboard ...`.

A user's mistake (bad config, bad storage URL, unknown study) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from studies.config import DEFAULT_STORAGE, ConfigError, load_config
from studies.storage import StorageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A mistake on the command line that is not about a config file."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies", description=__doc__)
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

    train = sub.add_parser("train", help="one run with the config's fixed values, no search")
    _config_args(train)
    train.add_argument("--wandb", choices=("online", "offline", "disabled"))

    lst = sub.add_parser("list", help="studies in a storage, with trial counts")
    lst.add_argument("--storage", default=DEFAULT_STORAGE)

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on a storage")
    dash.add_argument("--storage", default=DEFAULT_STORAGE)
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from studies.study import print_summary, run_study

    cfg = load_config(args.config, overrides=args.overrides)
    outcome = run_study(
        cfg,
        storage=args.storage,
        trials=args.trials,
        timeout=args.timeout,
        wandb=args.wandb,
        console=console,
        show_progress=not args.no_progress,
    )
    print_summary(outcome, cfg, console)
    return 0


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from studies import tracking
    from studies.runner import quiet_lightning, train_run

    cfg = load_config(args.config, overrides=args.overrides)
    quiet_lightning()
    mode = tracking.resolve_mode(args.wandb or cfg.wandb.mode)
    result = train_run(cfg, {}, cfg.study_dir / "train", wandb_mode=mode)
    console.print(
        f"{cfg.objective.metric}={result.value:.4f} "
        + " ".join(f"{k}={v:.4f}" for k, v in result.test.items())
        + f" epochs={result.epochs}"
    )
    console.print(f"checkpoint: {result.checkpoint}")
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    import optuna
    from rich.table import Table

    from studies.storage import open_storage

    summaries = optuna.get_all_study_summaries(storage=open_storage(args.storage))
    table = Table(title=f"studies in {args.storage}")
    for col in ("study", "direction", "trials", "best value"):
        table.add_column(col)
    for s in summaries:
        best = "-" if s.best_trial is None else f"{s.best_trial.value:.4f}"
        table.add_row(s.study_name, s.direction.name.lower(), str(s.n_trials), best)
    console.print(table)
    return 0


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from optuna_dashboard import run_server

    from studies.storage import open_storage

    storage = open_storage(args.storage)
    console.print(
        f"optuna-dashboard on http://{args.host}:{args.port} for {args.storage} (Ctrl-C to stop)"
    )
    run_server(storage, host=args.host, port=args.port)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "run": cmd_run,
    "train": cmd_train,
    "list": cmd_list,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    try:
        return COMMANDS[args.command](args, console)
    except (ConfigError, StorageError, UsageError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("\ninterrupted: finished trials are stored; run the same command to resume")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
