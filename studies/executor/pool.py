"""Worker processes: fresh interpreters (spawn) that train the jobs they are sent, one at a time.

    with WorkerPool(2, threads=1, wandb_mode="disabled") as pool:
        pool.submit(job)
        job, results = pool.wait()      # results is None when the worker died (SIGKILL, OOM)

A job travels as data (its specs name their trials by `TrialRef`), and the worker opens its
trials itself, records itself as their worker (`trials.WORKER_ATTR`), trains them and tells
them: a member that ends early is told while its population trains on. A worker that dies
leaves its trials RUNNING with its pid, which the study's budget fails and re-queues
(`loop.budget`); its place is taken by a new worker. One dead worker never stops the others:
each has its own pipe, unlike a `ProcessPoolExecutor`, which breaks as a whole.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from regzoo.studies.trial.spec import RunResult

STOP_GRACE_S = 60  # after Ctrl-C, how long workers get to fail their trials and exit


class _Worker:
    def __init__(self, index: int, threads: int | None, wandb_mode: str, env: dict[str, str]):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve,
            args=(child, threads, wandb_mode, env),
            name=f"regzoo-worker-{index}",
            daemon=False,  # a worker's W&B service is its own child: daemons cannot have one
        )
        self.process.start()
        child.close()
        self.job: Any = None


class WorkerPool:
    """`n` spawned workers; see the module docstring.

    Args:
        threads: Torch threads of each worker.
        envs: Environment variables of each worker (CUDA_VISIBLE_DEVICES: its own GPUs).
    """

    def __init__(
        self,
        n: int,
        *,
        threads: int | None,
        wandb_mode: str,
        envs: Sequence[dict[str, str]] | None = None,
    ) -> None:
        self.threads, self.wandb_mode = threads, wandb_mode
        self.envs = list(envs) if envs is not None else [{} for _ in range(n)]
        self.workers = [_Worker(i, threads, wandb_mode, self.envs[i]) for i in range(n)]

    @property
    def idle(self) -> int:
        return sum(w.job is None for w in self.workers)

    @property
    def busy(self) -> int:
        return len(self.workers) - self.idle

    def submit(self, job: Any) -> None:
        """Send `job` to an idle worker (there must be one)."""
        worker = next(w for w in self.workers if w.job is None)
        worker.conn.send(job)
        worker.job = job

    def wait(self) -> tuple[Any, list[RunResult] | None]:
        """The next job to end and its results; None for a job whose worker died (a new
        worker takes its place)."""
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            raise RuntimeError("no job is running")
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        for worker in busy:
            if worker.conn in ready and worker.conn.poll():
                job, worker.job = worker.job, None
                reply = worker.conn.recv()
                if isinstance(reply, BaseException):
                    raise reply
                return job, reply
        for i, worker in enumerate(self.workers):
            if worker.job is not None and worker.process.sentinel in ready:
                job = worker.job
                worker.conn.close()
                self.workers[i] = _Worker(i, self.threads, self.wandb_mode, self.envs[i])
                return job, None
        return self.wait()

    def close(self, *, interrupted: bool = False) -> None:
        """Stop the workers: an idle one at once; after Ctrl-C, a busy one once it has failed
        its trials (it got SIGINT too, or gets it now), or after `STOP_GRACE_S`."""
        for worker in self.workers:
            if worker.process.is_alive():
                if worker.job is None:
                    worker.conn.send(None)
                elif interrupted and worker.process.pid is not None:
                    os.kill(worker.process.pid, signal.SIGINT)
        for worker in self.workers:
            worker.process.join(timeout=STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(interrupted=kind is not None and issubclass(kind, KeyboardInterrupt))


def _serve(conn: Connection, threads: int | None, wandb_mode: str, env: dict[str, str]) -> None:
    """A worker's life: settle in, then train each job it is sent until it is sent None."""
    os.environ.update(env)  # before torch touches a device
    from regzoo.studies.executor.run import run_job, settle_worker
    from regzoo.studies.executor.trials import Trials
    from regzoo.studies.trial.signals import InterruptOnce

    settle_worker(threads)
    trials = Trials()
    InterruptOnce().__enter__()  # for its life: a second Ctrl-C (the terminal's, then the
    # parent's) must not cut the first one's records
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        try:
            conn.send(run_job(job, wandb_mode, trials))
        except KeyboardInterrupt:  # its runs are failed and told: the parent stops too
            return
        except BaseException as exc:  # a bug outside any run: the parent raises it
            conn.send(RuntimeError(f"worker {os.getpid()}: {type(exc).__name__}: {exc}"))
