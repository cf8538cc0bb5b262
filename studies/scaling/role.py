"""What a `regzoo run` process is, decided once: alone, the parent of workers, a worker, or a
DDP rank, from its options and the environment its launcher gave it.

    opts = RunOptions(config="studies/configs/default.yaml", workers=2)
    role = decide_role(opts, cfg)   # Role.PARENT: starts two `python -m regzoo run` workers
"""

from __future__ import annotations

import os
from enum import Enum

from regzoo._checks import UserError
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.scaling import ddp
from regzoo.studies.scaling.options import WORKER_ENV, RunOptions

__all__ = ["WORKER_ENV", "Role", "RunOptions", "ScalingError", "decide_role"]


class ScalingError(UserError):
    """A --workers / --devices-per-trial request this machine or launch cannot honour."""


class Role(Enum):
    ALONE = "alone"  # the study from this process (its jobs here or in spawned workers)
    PARENT = "parent"  # --devices-per-trial K: starts N workers, each a torchrun group
    WORKER = "worker"  # one of a parent's workers, one trial at a time
    RANK = "rank"  # one rank of a DDP group (torchrun or SLURM): rank 0 runs the study


def worker_of_environment() -> str | None:
    """The "i/N" a parent gave this process, or None when it was started by a user."""
    return os.environ.get(WORKER_ENV)


def decide_role(opts: RunOptions, cfg: StudyConfig) -> Role:
    """The role of this process; a request the launch cannot honour is a ScalingError.

    A trainer on several devices outside `--devices-per-trial` is refused: Lightning would
    relaunch this command once per device, each process a study of its own.
    """
    devices = cfg.trainer.devices
    if devices != 1:  # "auto" too: on a machine with GPUs it means all of them
        k = devices if isinstance(devices, int) else "K"
        raise ScalingError(
            f"trainer.devices={devices}: a trial trains on one device; to train each trial on "
            f"several, use --devices-per-trial {k} (each rank then gets rank 0's parameters); "
            "allowed: trainer.devices=1"
        )
    env = ddp.cluster()
    if env is not None:
        _check_launch(opts, env)
        return Role.RANK
    if opts.worker is not None:
        return Role.WORKER
    if opts.devices > 1:
        return Role.PARENT
    return Role.ALONE


def _check_launch(opts: RunOptions, env: ddp.ClusterEnvironment) -> None:
    """Under torchrun or SLURM the launcher sets the ranks; the flags may only agree."""
    if opts.workers > 1:
        raise ScalingError(
            f"--workers {opts.workers} inside a torchrun/SLURM launch: each launch is one group "
            "of ranks training one trial at a time; start more launches for more workers"
        )
    local = ddp.devices_per_node(env)
    if opts.devices_per_trial not in (None, local):
        raise ScalingError(
            f"--devices-per-trial {opts.devices_per_trial} disagrees with the launcher's "
            f"{local} rank(s) per machine; drop the flag or launch {opts.devices_per_trial}"
        )
