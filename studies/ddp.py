"""One trial on several devices with DDP: rank 0 owns the Optuna trial, the other ranks follow.

Every rank runs the same command, started by torchrun, by SLURM's srun, or by
`python -m studies run CONFIG --devices-per-trial K` (which starts torchrun itself):

    torchrun --nproc-per-node 4 -m studies run studies/configs/default.yaml --storage URL

Rank 0 runs the study as a single process would and, before each trial trains, broadcasts the
trial's parameters and seed over a gloo process group. The other ranks never open the storage,
never sample and never log to W&B: they train the parameters they receive, so a trial ends with
one value and one W&B run. Pruning stops every rank at the same epoch (`OptunaPruning`
broadcasts rank 0's decision) and Lightning's EarlyStopping reduces its decision over the ranks.
Lightning's DDP strategy reuses the process group created here, which outlives every trial.

Every rank reads and writes `runs/` (checkpoints are loaded by all ranks for testing): on
several machines, `runs_dir` must be on a shared filesystem.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from rich.console import Console

from studies.config import StudyConfig
from studies.runner import TrialResult, quiet_lightning, train_run

# A follower waits for rank 0's next trial while rank 0 waits for a free slot: as long as other
# workers' trials take, so much longer than the 30 minutes of torch's default.
JOB_TIMEOUT = timedelta(days=7)


def cluster() -> ClusterEnvironment | None:
    """The launcher's environment (torchrun or SLURM) when it started more than one rank."""
    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            env = kind()
            if env.world_size() > 1:
                return env
    return None


def devices_per_node(env: ClusterEnvironment) -> int:
    """Ranks per machine: torchrun's LOCAL_WORLD_SIZE, or SLURM's tasks per node."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    nodes = int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES", "1")))
    return env.world_size() // max(nodes, 1)


@dataclass(frozen=True)
class Job:
    """One trial as rank 0 hands it to the other ranks."""

    params: dict[str, Any]
    seed: int
    run_name: str


class TrialGroup:
    """The ranks of one trial: Lightning's process group plus a gloo channel for jobs."""

    def __init__(self, env: ClusterEnvironment, backend: str) -> None:
        self.env = env
        self.rank = env.global_rank()
        if not dist.is_initialized():
            # What Lightning's DDP strategy would do in its first fit; it then reuses the group.
            if backend == "nccl":  # each rank's NCCL communicator on its own GPU
                torch.cuda.set_device(env.local_rank())
            os.environ["MASTER_ADDR"] = env.main_address
            os.environ["MASTER_PORT"] = str(env.main_port)
            dist.init_process_group(backend, rank=self.rank, world_size=env.world_size())
        self._jobs = dist.new_group(backend="gloo", timeout=JOB_TIMEOUT)
        nodes = env.world_size() // devices_per_node(env)
        self.trainer_overrides = {
            "strategy": "ddp",
            "devices": devices_per_node(env),
            "num_nodes": nodes,
            # Lightning would try SLURM first, which is wrong for a torchrun inside a SLURM job.
            "plugins": [env],
        }

    def send(self, job: Job | None) -> None:
        """Rank 0: the next trial, or None when the study is over."""
        dist.broadcast_object_list([job], src=0, group=self._jobs)

    def receive(self) -> Job | None:
        box: list[Job | None] = [None]
        dist.broadcast_object_list(box, src=0, group=self._jobs)
        return box[0]

    def close(self) -> None:
        dist.destroy_process_group()


class Leader:
    """Rank 0's `train`: broadcast the sampled trial, then train it as rank 0 of the group."""

    def __init__(self, group: TrialGroup, callbacks: list[L.Callback]) -> None:
        self.group, self.callbacks = group, callbacks

    def __call__(
        self,
        cfg: StudyConfig,
        params: dict[str, Any],
        run_dir: Path,
        *,
        seed: int | None = None,
        run_name: str = "train",
        callbacks: list[L.Callback] | None = None,
        **kwargs: Any,
    ) -> TrialResult:
        seed = cfg.seed if seed is None else seed
        self.group.send(Job(params=params, seed=seed, run_name=run_name))
        return train_run(
            cfg,
            params,
            run_dir,
            seed=seed,
            run_name=run_name,
            callbacks=[*(callbacks or []), *self.callbacks],
            trainer_overrides=self.group.trainer_overrides,
            **kwargs,
        )


def follow(cfg: StudyConfig, group: TrialGroup, callbacks: list[L.Callback]) -> int:
    """Ranks > 0: train each trial rank 0 sends, until it sends None; the trials followed."""
    followed = 0
    while (job := group.receive()) is not None:
        followed += 1
        # Rank 0 owns runs/<study>/trial-<n>/ (ModelCheckpoint broadcasts its folder); this rank
        # only needs a folder of its own that no other rank deletes.
        with tempfile.TemporaryDirectory(prefix=f"regzoo-rank{group.rank}-") as tmp:
            try:
                train_run(
                    cfg,
                    job.params,
                    Path(tmp) / job.run_name,
                    trial=None,  # never touches the storage: rank 0 reports and prunes
                    wandb_mode="disabled",  # one W&B run per trial, rank 0's
                    run_name=job.run_name,
                    callbacks=list(callbacks),
                    seed=job.seed,
                    trainer_overrides=group.trainer_overrides,
                )
            except Exception as exc:  # rank 0 hit the same error and records it on the trial
                print(f"rank {group.rank}: {job.run_name} failed: {exc}", file=sys.stderr)
    return followed


def backend_for(cfg: StudyConfig) -> str:
    """The process group backend Lightning would pick for the config's accelerator."""
    accelerator = cfg.trainer.accelerator
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def run_rank(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    wandb: str | None = None,
    console: Console | None = None,
    show_progress: bool = False,
    summary: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> None:
    """Run this process's part of a DDP study: the study on rank 0, a follower elsewhere.

    `callbacks` are added to every rank's Trainer. On an error rank 0 exits without telling the
    followers; the launcher (torchrun, `srun --kill-on-bad-exit=1`) stops them.
    """
    from studies.study import print_summary, run_study

    env = cluster()
    if env is None:
        raise RuntimeError("run_rank needs a torchrun or SLURM launch with more than one rank")
    quiet_lightning()
    # DDP warnings that hold for every trial: the test split is padded to a multiple of the
    # world size, and per-rank val/loss is reduced by the decisions that need it.
    warnings.filterwarnings("ignore", message=".*DistributedSampler.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    group = TrialGroup(env, backend_for(cfg))
    try:
        if group.rank != 0:
            follow(cfg, group, callbacks or [])
            return
        console = console or Console()
        outcome = run_study(
            cfg,
            storage=storage,
            trials=trials,
            timeout=timeout,
            wandb=wandb,
            console=console,
            show_progress=show_progress,
            train=Leader(group, callbacks or []),
        )
        group.send(None)
        if summary:
            print_summary(outcome, cfg, console)
    finally:
        group.close()
