"""One trial on several devices with DDP: rank 0 owns the Optuna trial, the other ranks follow.

Every rank runs the same command, started by torchrun, by SLURM's srun, or by
`regzoo run CONFIG --devices-per-trial K` (which starts torchrun itself):

    torchrun --nproc-per-node 4 -m studies run studies/configs/default.yaml --storage URL

Rank 0 runs the study as a single process would and, before each trial trains, hands the trial's
parameters and seed to the other ranks through the launcher's c10d store (key `job/<n>`). The
other ranks never open the storage, never sample and never log to W&B: they train the parameters
they receive, so a trial ends with one value and one W&B run. Pruning stops every rank at the
same epoch: rank 0's lifecycle decides keeping, early stopping and pruning, and its decision is
broadcast (`LifecycleCallback`).

Each trial has its own process group: every rank creates the default group (which Lightning's DDP
strategy then uses) before the trial and destroys it after, while the store outlives the trials.
A rank whose trial raises (an out-of-memory error on that rank alone, say) writes its error to the
store, unless another rank's came first, and tears down its side of the group; the ranks blocked
in a collective of that trial then fail within seconds (gloo: "Connection closed by peer") instead
of at the group's timeout. Rank 0 waits until every rank is done with the trial and fails it with
the first error (`RankFailed: rank 1: RuntimeError: ...`; its own error as a single process
would), and all ranks go on to the next trial in a fresh group. With NCCL, a peer's teardown does
not interrupt a pending operation: the other ranks fail at the group's timeout (30 minutes).

Every rank reads and writes `runs/` (checkpoints are loaded by all ranks for testing): on
several machines, `runs_dir` must be on a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.loop.study import run_study
from regzoo.studies.results.console import print_summary
from regzoo.studies.results.wandb_study import log_study_after_run
from regzoo.studies.scaling.options import RunOptions
from regzoo.studies.trial.console import quiet_training
from regzoo.studies.trial.lifecycle import error_text
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import train_run

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


class RankFailed(RuntimeError):
    """Another rank's trial failed first (an error on that rank alone): the trial fails."""


class TrialGroup:
    """The ranks of one study: a store that outlives trials, and a process group per trial.

    Rank 0 hands out job n as the store's key `job/<n>`. Every rank then joins trial n's process
    group (the default group, which Lightning's DDP strategy uses), trains, and destroys it. A
    rank whose trial raises writes `rank <r>: <error>` under `failed/<n>` unless another rank
    wrote first, then destroys its side of the group: gloo peers blocked in a collective of that
    trial see their connection closed within seconds. Each rank marks `done/<n>/<r>` last.
    """

    def __init__(self, env: ClusterEnvironment, backend: str) -> None:
        self.env, self.backend = env, backend
        self.rank, self.world_size = env.global_rank(), env.world_size()
        if backend == "nccl":  # each rank's NCCL communicator on its own GPU
            torch.cuda.set_device(env.local_rank())
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        # torchrun's agent hosts the store (the ranks are its clients); otherwise rank 0 does.
        store, _, _ = next(dist.rendezvous("env://", rank=self.rank, world_size=self.world_size))
        self.store = dist.PrefixStore("regzoo/", store)
        self.jobs = 0  # the next job's number
        nodes = env.world_size() // devices_per_node(env)
        self.trainer_overrides = {
            "strategy": "ddp",
            "devices": devices_per_node(env),
            "num_nodes": nodes,
            # Lightning would try SLURM first, which is wrong for a torchrun inside a SLURM job.
            "plugins": [env],
        }

    def send(self, job: Job | None) -> int:
        """Rank 0: the next trial, or None when the study is over; the job's number."""
        n, self.jobs = self.jobs, self.jobs + 1
        # JSON, not pickle: a store any rank can write to must never run code when read.
        text = "null" if job is None else json.dumps(dataclasses.asdict(job))
        self.store.set(f"job/{n}", text)
        return n

    def receive(self) -> tuple[int, Job | None]:
        """Ranks > 0: wait for rank 0's next job; its number and the job (None: stop)."""
        n, self.jobs = self.jobs, self.jobs + 1
        self.store.wait([f"job/{n}"], JOB_TIMEOUT)
        fields = json.loads(self.store.get(f"job/{n}").decode())
        return n, None if fields is None else Job(**fields)

    @contextmanager
    def trial(self, n: int) -> Iterator[None]:
        """Trial n's process group on every rank; an error is reported before it is torn down."""
        # A fresh prefix per trial: every rank's rendezvous for this group meets only its own.
        store = dist.PrefixStore(f"trial/{n}/", self.store)
        dist.init_process_group(
            self.backend, store=store, rank=self.rank, world_size=self.world_size
        )
        try:
            yield
        except BaseException as exc:
            # Before the group goes: a peer whose collective fails next finds the first cause.
            self.store.compare_set(f"failed/{n}", "", f"rank {self.rank}: {_describe(exc)}")
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            self.store.set(f"done/{n}/{self.rank}", "")

    def failure_so_far(self, n: int) -> str | None:
        """The first rank's error of trial n, if one was reported yet (never waits: rank 0
        asks while its own group is up, with followers maybe blocked in a collective)."""
        if not self.store.check([f"failed/{n}"]):
            return None
        return self.store.get(f"failed/{n}").decode()

    def first_failure(self, n: int) -> str | None:
        """Rank 0, after trial n: once every rank is done with it, the first rank's error."""
        others = [f"done/{n}/{r}" for r in range(1, self.world_size)]
        if others:
            self.store.wait(others, JOB_TIMEOUT)
        if not self.store.check([f"failed/{n}"]):
            return None
        return self.store.get(f"failed/{n}").decode()

    def stop(self) -> None:
        """Rank 0: the study is over; return once every follower has seen it (when rank 0
        hosts the store, leaving earlier would take it away before they read it)."""
        n = self.send(None)
        others = [f"stopped/{n}/{r}" for r in range(1, self.world_size)]
        if others:
            self.store.wait(others, JOB_TIMEOUT)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


class Leader:
    """Rank 0's `train`: hand out the run's spec, then train it as rank 0 of the group."""

    def __init__(self, group: TrialGroup, callbacks: list[L.Callback]) -> None:
        self.group, self.callbacks = group, callbacks

    def __call__(
        self,
        spec: TrialSpec,
        *,
        callbacks: list[L.Callback] | None = None,
        **kwargs: Any,
    ) -> RunResult:
        n = self.group.send(Job(params=spec.params, seed=spec.seed, run_name=spec.run_name))

        def describe(exc: BaseException) -> str:
            first = self.group.failure_so_far(n)  # a follower's error broke our collective
            if first is None or first.startswith("rank 0: "):
                return error_text(exc)  # rank 0's own error, recorded as in a single process
            return error_text(RankFailed(first))

        with self.group.trial(n):
            result = train_run(
                spec,
                callbacks=[*(callbacks or []), *self.callbacks],
                trainer_overrides=self.group.trainer_overrides,
                describe=describe,
                **kwargs,
            )
        late = self.group.first_failure(n)
        if late is not None and result.state != "failed":  # after the trial's last collective
            print(f"{spec.run_name}: {late} after rank 0 finished", file=sys.stderr)
        return result


def follow(cfg: StudyConfig, group: TrialGroup, callbacks: list[L.Callback]) -> int:
    """Ranks > 0: train each trial rank 0 sends, until it sends None; the trials followed."""
    followed = 0
    while True:
        n, job = group.receive()
        if job is None:
            group.store.set(f"stopped/{n}/{group.rank}", "")
            return followed
        followed += 1
        # Rank 0 owns runs/<study>/trial-<n>/ (it saves the checkpoints); this rank only needs
        # a folder of its own that no other rank deletes.
        with tempfile.TemporaryDirectory(prefix=f"regzoo-rank{group.rank}-") as tmp:
            spec = TrialSpec(cfg, job.params, Path(tmp) / job.run_name, job.seed, job.run_name)

            def fail(exc: BaseException) -> str:  # reported to rank 0, which fails the trial
                raise exc

            try:
                with group.trial(n):
                    train_run(
                        spec,
                        trial=None,  # never touches the storage: rank 0 reports and prunes
                        wandb_mode="disabled",  # one W&B run per trial, rank 0's
                        callbacks=list(callbacks),
                        trainer_overrides=group.trainer_overrides,
                        describe=fail,
                    )
            except Exception as exc:
                print(f"rank {group.rank}: {job.run_name} failed: {exc}", file=sys.stderr)


def backend_for(cfg: StudyConfig) -> str:
    """The process group backend Lightning would pick for the config's accelerator."""
    accelerator = cfg.trainer.accelerator
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def run_rank(
    cfg: StudyConfig,
    opts: RunOptions,
    *,
    console: Console | None = None,
    summary: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> None:
    """Run this process's part of a DDP study: the study on rank 0, a follower elsewhere.

    `callbacks` are added to every rank's Trainer. On an error outside a trial rank 0 tells the
    followers to stop and exits without waiting for them; the launcher reports the failure.
    """
    env = cluster()
    if env is None:
        raise RuntimeError("run_rank needs a torchrun or SLURM launch with more than one rank")
    with quiet_training(), warnings.catch_warnings():
        # DDP warnings that hold for every trial: the test split is padded to a multiple of the
        # world size, and per-rank val/loss is reduced by the decisions that need it.
        warnings.filterwarnings("ignore", message=".*DistributedSampler.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        _run_rank(cfg, opts, env, console or Console(), summary, callbacks or [])


def _run_rank(
    cfg: StudyConfig,
    opts: RunOptions,
    env: ClusterEnvironment,
    console: Console,
    summary: bool,
    callbacks: list[L.Callback],
) -> None:
    group = TrialGroup(env, backend_for(cfg))
    try:
        if group.rank != 0:
            follow(cfg, group, callbacks)
            return
        outcome = run_study(
            cfg,
            **opts.study_args(),
            console=console,
            show_progress=opts.progress and opts.worker is None,
            train=Leader(group, callbacks),
        )
        group.stop()
        if summary:
            print_summary(outcome, cfg, console)
            if cfg.confirm is not None:  # its runs train on one device, outside torchrun
                console.print(f"confirm: run `regzoo confirm {cfg.name}` (not under torchrun)")
            log_study_after_run(
                outcome.study, cfg, outcome.wandb_mode, console, storage=outcome.storage
            )
    except BaseException:
        with suppress(Exception):  # the followers stop too, without waiting for them
            group.send(None)
        raise
    finally:
        group.close()
