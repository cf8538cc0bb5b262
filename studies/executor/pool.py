"""Worker processes: fresh interpreters (spawn) that train the jobs they are sent, one at a time.

    with WorkerPool(2, threads=1) as pool:   # the workers import torch from here on
        pool.submit(job, "disabled")         # with the W&B mode its runs log in
        job, results = pool.wait()           # results: None if the worker died (SIGKILL, OOM)

A worker knows nothing of its jobs until it is sent one, so a pool may start before its
parent has imported torch or planned a job (`regzoo experiment` does): the workers' imports
then overlap the parent's.

A job travels as data (its specs name their trials by `TrialRef`), and the worker opens its
trials itself, records itself as their worker (`trials.WORKER_ATTR`), trains them and tells
them: a member that ends early is told while its population trains on. A worker that dies
leaves its trials RUNNING with its pid, which the study's budget fails and re-queues
(`loop.budget`); its place is taken by a new worker. One dead worker never stops the others:
each has its own pipe, unlike a `ProcessPoolExecutor`, which breaks as a whole.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from regzoo.studies.trial.spec import RunResult

STOP = "stop"  # after a job, from an interrupted parent: do not start it
STOP_GRACE_S = 60  # after Ctrl-C, how long workers get to fail their trials and exit


class _Worker:
    def __init__(self, index: int, threads: int | None, env: dict[str, str]):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve,
            args=(child, threads, env),
            name=f"regzoo-worker-{index}",
            daemon=False,  # a worker's W&B service is its own child: daemons cannot have one
        )
        # Started with SIGINT ignored (inherited): a Ctrl-C while it imports torch cannot kill it
        # with a traceback; it takes SIGINT once settled (`_serve`).
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.process.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
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
        envs: Sequence[dict[str, str]] | None = None,
    ) -> None:
        self.threads = threads
        self.envs = list(envs) if envs is not None else [{} for _ in range(n)]
        self.workers = [_Worker(i, threads, self.envs[i]) for i in range(n)]
        self.leaving: list[_Worker] = []  # let go by `shrink`, joined by `close`

    @property
    def idle(self) -> int:
        return sum(w.job is None for w in self.workers)

    @property
    def busy(self) -> int:
        return len(self.workers) - self.idle

    def shrink(self, n: int) -> None:
        """Keep the first `n` workers and let the others go (idle ones: a pool started before
        its owner knew how many jobs it has). They exit once they have settled in; `close`
        reaps them."""
        extra = self.workers[n:]
        if any(w.job is not None for w in extra):
            raise RuntimeError("shrink lets only idle workers go")
        for worker in extra:
            worker.conn.send(None)
        self.leaving += extra
        del self.workers[n:], self.envs[n:]

    def submit(self, job: Any, wandb_mode: str) -> None:
        """Send `job` to an idle worker (there must be one); its runs log to W&B in
        `wandb_mode`."""
        worker = next(w for w in self.workers if w.job is None)
        worker.conn.send((job, wandb_mode))
        worker.job = job

    def wait(self) -> tuple[Any, list[RunResult] | None]:
        """The next job to end and its results; None for a job whose worker died (a new
        worker takes its place)."""
        busy = [w for w in self.workers if w.job is not None]
        if not busy:
            raise RuntimeError("no job is running")
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        dead = set()
        for worker in busy:
            if worker.conn in ready and worker.conn.poll():
                try:
                    reply = worker.conn.recv()
                except (EOFError, OSError):  # the pipe's end: the worker died
                    dead.add(id(worker))
                    continue
                job, worker.job = worker.job, None
                if isinstance(reply, BaseException):
                    raise reply
                return job, reply
        for i, worker in enumerate(self.workers):
            gone = worker.process.sentinel in ready or id(worker) in dead
            if worker.job is not None and gone:
                worker.process.join()
                job = worker.job
                worker.conn.close()
                self.workers[i] = _Worker(i, self.threads, self.envs[i])
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
                    with contextlib.suppress(OSError):
                        worker.conn.send(STOP)  # read before its job starts, if it is starting
                    os.kill(worker.process.pid, signal.SIGINT)
        for worker in self.workers + self.leaving:
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


def _serve(conn: Connection, threads: int | None, env: dict[str, str]) -> None:
    """A worker's life: settle in, then train each job it is sent until it is sent None."""
    os.environ.update(env)  # before torch touches a device
    from regzoo.studies.executor.run import run_job, settle_worker
    from regzoo.studies.executor.trials import Trials
    from regzoo.studies.trial.signals import InterruptOnce, raise_if_swallowed

    settle_worker(threads)
    trials = Trials()
    # For its life: a Ctrl-C stops the run at its next batch (not inside a finalizer), and a
    # second one (the terminal's, then the parent's) cannot cut the first one's records.
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored until now
    guard = InterruptOnce(defer=True).__enter__()
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None or message == STOP or guard.interrupted or conn.poll():
            return  # a job followed by STOP: the parent was interrupted before it started
        job, wandb_mode = message
        try:
            conn.send(run_job(job, wandb_mode, trials))
            raise_if_swallowed()  # a Ctrl-C that came after the job's last batch
        except KeyboardInterrupt:  # its runs are failed and told: the parent stops too
            return
        except BaseException as exc:  # a bug outside any run: the parent raises it
            conn.send(RuntimeError(f"worker {os.getpid()}: {type(exc).__name__}: {exc}"))
