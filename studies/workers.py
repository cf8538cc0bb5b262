"""Scale a study out: N trial processes on one storage, each trial on K devices with DDP.

    python -m studies run CONFIG --workers 2                        # 2 trials at a time
    python -m studies run CONFIG --devices-per-trial 2              # each trial: DDP on 2 devices
    python -m studies run CONFIG --workers 2 --storage postgresql://host/db   # on each machine

The parent opens the study, starts N workers (each `python -m studies run ...` again, or torchrun
over K ranks of it), waits, and prints the summary; the workers print their own trial lines,
prefixed `w<i>`. Between them they finish exactly the requested trials (see `_budget`). On a
machine with CUDA, worker i sees only its own K GPUs (CUDA_VISIBLE_DEVICES); on CPU the cores are
shared out with torch's thread count.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
from typing import IO, Any, cast

from rich.console import Console

from studies import ddp
from studies.config import StudyConfig

WORKER_ENV = "REGZOO_WORKER"  # "i/N" in a worker process, set by its parent
STOP_GRACE_S = 60  # after Ctrl-C, how long workers get to fail their trials and exit


class ScalingError(ValueError):
    """A --workers / --devices-per-trial request this machine or launch cannot honour."""


def wants_scaling(args: argparse.Namespace, cfg: StudyConfig) -> bool:
    """True unless `run` is one process alone on its storage, as far as it can tell.

    A server storage counts as shared: other machines run the same command against it.
    """
    devices = args.devices_per_trial or 1
    return (
        args.workers > 1
        or devices > 1
        or WORKER_ENV in os.environ
        or ddp.cluster() is not None
        or (isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 1)
        or (args.storage or cfg.storage).startswith("postgresql")
    )


def own_sampler_seed(cfg: StudyConfig, worker: str | None) -> StudyConfig:
    """The config with a sampler seed of this machine and worker's own.

    Workers with one seed would sample the same parameters, trial for trial. The seed stays a
    function of (config seed, host name, worker index), so a rerun draws the same streams.
    """
    if cfg.sampler.seed is None:
        return cfg
    key = f"{cfg.sampler.seed}/{socket.gethostname()}/{worker or 0}".encode()
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")
    return cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"seed": seed})})


def run_scaled(cfg: StudyConfig, args: argparse.Namespace, console: Console) -> int:
    """`python -m studies run` as a parent of workers, as a worker, or as one DDP rank."""
    if isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 1:
        raise ScalingError(
            f"trainer.devices={cfg.trainer.devices}: train a trial on several devices with "
            f"--devices-per-trial {cfg.trainer.devices} (each rank then gets rank 0's parameters)"
        )
    limit_threads()
    env = ddp.cluster()
    worker = os.environ.get(WORKER_ENV)
    if env is not None or worker is not None:
        cfg = own_sampler_seed(cfg, worker)
    if env is not None:
        _check_launch(args, env)
        ddp.run_rank(
            cfg,
            storage=args.storage,
            trials=args.trials,
            timeout=args.timeout,
            wandb=args.wandb,
            console=worker_console(worker) if worker else console,
            show_progress=not (args.no_progress or worker),
            summary=worker is None,
        )
        return 0
    if worker is not None:
        from studies.study import run_study

        run_study(
            cfg,
            storage=args.storage,
            trials=args.trials,
            timeout=args.timeout,
            wandb=args.wandb,
            console=worker_console(worker),
            show_progress=False,
        )
        return 0
    if args.workers == 1 and (args.devices_per_trial or 1) == 1:  # alone here, not on the server
        return run_alone(own_sampler_seed(cfg, None), args, console)
    return launch(cfg, args, console)


def run_alone(cfg: StudyConfig, args: argparse.Namespace, console: Console) -> int:
    """`run` as one process: the study, then its summary."""
    from studies.study import print_summary, run_study

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


def launch(cfg: StudyConfig, args: argparse.Namespace, console: Console) -> int:
    """Start the workers, wait for them, print the study's summary; 1 if a worker failed."""
    from studies import tracking
    from studies._preflight import check_runs_dir
    from studies.runner import count_finished, open_study, quiet_lightning
    from studies.study import StudyOutcome, print_summary

    quiet_lightning()
    check_runs_dir(cfg.runs_dir)  # once here, not in each worker
    url = args.storage or cfg.storage
    target = args.trials or cfg.trials
    n, k = args.workers, args.devices_per_trial or 1
    gpus = gpu_plan(cfg, n, k)
    threads = threads_per_process(n * k)
    mode = tracking.resolve_mode(args.wandb or cfg.wandb.mode)
    study = open_study(cfg, url)  # tables and study exist before N writers start
    already = count_finished(study)
    where = f"GPUs {', '.join(gpus)}" if gpus else f"CPU, {threads} thread(s) per process"
    console.print(
        f"[bold]study[/] {cfg.name}: {already} of {target} trials already finished in {url}; "
        f"{n} worker(s) x {k} device(s) per trial ({where})",
        soft_wrap=True,
    )
    command = worker_command(args, url, target, mode, k)
    procs = []
    for i in range(n):
        env = {**os.environ, WORKER_ENV: f"{i}/{n}", "OMP_NUM_THREADS": str(threads)}
        env["PYTHONUNBUFFERED"] = "1"  # whole lines as they happen, not at exit
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        procs.append(subprocess.Popen(command, env=env))
    codes = wait_all(procs)
    outcome = StudyOutcome(study=study, already_finished=already, storage=url, wandb_mode=mode)
    print_summary(outcome, cfg, console)
    failed = [f"w{i} (exit {code})" for i, code in enumerate(codes) if code != 0]
    if failed:
        console.print(f"[red]worker(s) failed:[/] {', '.join(failed)}")
    return 1 if failed else 0


def worker_command(args: argparse.Namespace, url: str, target: int, mode: str, k: int) -> list[str]:
    """The command line of one worker: this `run` again, under torchrun when K > 1."""
    run = ["-m", "studies", "run", args.config, *(f"--set={o}" for o in args.overrides)]
    run += ["--storage", url, "--trials", str(target), "--wandb", mode, "--no-progress"]
    if args.timeout is not None:
        run += ["--timeout", str(args.timeout)]
    if k == 1:
        return [sys.executable, *run]
    # --standalone: a rendezvous on a free local port, so N workers' groups never meet.
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={k}"]
    return [sys.executable, *torchrun, *run, "--devices-per-trial", str(k)]


def gpu_plan(cfg: StudyConfig, n: int, k: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES of each worker (K GPUs each), or None when trials run on CPU."""
    import torch

    if cfg.trainer.accelerator in ("cpu", "mps"):
        return None
    if not torch.cuda.is_available():
        if cfg.trainer.accelerator in ("gpu", "cuda"):
            raise ScalingError(
                f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible; "
                "use trainer.accelerator=auto or cpu"
            )
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [d.strip() for d in visible.split(",") if d.strip()]
        if visible
        else [str(i) for i in range(torch.cuda.device_count())]
    )
    if len(ids) < n * k:
        raise ScalingError(
            f"--workers {n} x --devices-per-trial {k} needs {n * k} GPUs, {len(ids)} visible; "
            "use fewer workers, or --set trainer.accelerator=cpu"
        )
    return [",".join(ids[i * k : (i + 1) * k]) for i in range(n)]


def threads_per_process(processes: int) -> int:
    """Torch threads per process so that all processes together use each core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // processes)


def limit_threads() -> None:
    """In a worker or rank: torch uses the threads its parent gave it (OMP_NUM_THREADS)."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    if text.isdigit() and int(text) > 0:
        import torch

        torch.set_num_threads(int(text))


def wait_all(procs: list[subprocess.Popen[Any]]) -> list[int]:
    """Exit codes of all workers; Ctrl-C lets them fail their trials, then re-raises."""
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # the terminal signalled them too; this covers a `kill -INT` of the parent
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def worker_console(worker: str) -> Console:
    """A console whose lines start with `w<i> `, so that N workers' lines stay readable."""
    stream = _LinePrefix(sys.stdout, f"w{worker.partition('/')[0]} ")
    return Console(file=cast(IO[str], stream), soft_wrap=True)  # one trial, one line


class _LinePrefix:
    """A text stream that writes `prefix` at the start of every line."""

    def __init__(self, stream: IO[str], prefix: str) -> None:
        self.stream, self.prefix = stream, prefix
        self._line_start = True

    def write(self, text: str) -> int:
        out = []
        for line in text.splitlines(keepends=True):
            out.append(self.prefix + line if self._line_start else line)
            self._line_start = line.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def _check_launch(args: argparse.Namespace, env: Any) -> None:
    """Under torchrun or SLURM the launcher sets the ranks; the flags may only agree."""
    if args.workers > 1:
        raise ScalingError(
            f"--workers {args.workers} inside a torchrun/SLURM launch: each launch is one group "
            "of ranks training one trial at a time; start more launches for more workers"
        )
    local = ddp.devices_per_node(env)
    if args.devices_per_trial not in (None, local):
        raise ScalingError(
            f"--devices-per-trial {args.devices_per_trial} disagrees with the launcher's "
            f"{local} rank(s) per machine; drop the flag or launch {args.devices_per_trial}"
        )
