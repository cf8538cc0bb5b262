"""Weights & Biases tracking: one run per trial, offline unless a login is configured.

A missing API key never prompts: runs are written offline under `runs/wandb/` and
`wandb sync` uploads them later.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from regzoo.studies._compat import drop_wandb_init_arg

MODES = ("online", "offline", "disabled")


def has_login() -> bool:
    """True when an API key is in the environment or ~/.netrc (as `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(requested: str | None) -> str:
    """The mode to use: the request, else WANDB_MODE, else online with a login, else offline."""
    if requested:
        return requested
    env = os.environ.get("WANDB_MODE")
    if env in MODES:
        return "online" if env == "online" and has_login() else env
    if env == "dryrun":
        return "offline"
    return "online" if has_login() else "offline"


def make_logger(
    *,
    mode: str,
    project: str,
    entity: str | None,
    group: str,
    name: str,
    config: dict[str, Any],
    save_dir: Path,
) -> WandbLogger | None:
    """A WandbLogger for one trial, or None when tracking is disabled."""
    if mode == "disabled":
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=name,
        config=config,
        # Absolute: wandb's service process resolves a relative path against the directory it
        # started in, and writes nothing when the process has changed directory since.
        save_dir=str(save_dir.resolve()),
        mode=mode,
        job_type="trial",
        reinit="finish_previous",
        # The run's own settings, not WANDB_* variables: the process keeps its environment.
        settings=wandb.Settings(silent=True, console="off"),
    )
    drop_wandb_init_arg(logger, "anonymous")
    return logger


def finish(logger: WandbLogger | None, summary: dict[str, Any], *, state: str) -> None:
    """Write the final metrics and the trial's `state` to the run's summary, close the run.

    A failed trial also closes its run with exit code 1, so W&B shows it as failed, not finished.
    """
    if logger is None:
        return
    import wandb

    run = logger.experiment
    for key, value in {**summary, "state": state}.items():
        run.summary[key] = value
    wandb.finish(exit_code=1 if state == "failed" else 0)


def sync_command(save_dir: Path) -> str:
    return f"wandb sync {save_dir / 'wandb'}/offline-run-*"
