"""Scale a study out: N jobs at a time on one storage, each trial on K devices with DDP.

    regzoo run CONFIG --workers 2                        # 2 jobs at a time
    regzoo run CONFIG --devices-per-trial 2              # each trial: DDP on 2 devices
    regzoo run CONFIG --workers 2 --storage postgresql://host/db   # on each machine

With one device per trial, the process that runs the study asks the trials and hands them, as
data, to N spawned worker processes (`executor.WorkerPool`): the executor's one worker model,
shared with the experiments and the verdicts. On a machine with CUDA, worker i sees only its
own GPU (CUDA_VISIBLE_DEVICES); on CPU the cores are shared out with torch's thread count.
With `--devices-per-trial K`, DDP needs its launcher: the parent starts N workers, each a
torchrun group of K ranks of `python -m regzoo run ...` whose rank 0 runs the study loop, and
prints the summary; their lines are prefixed `w<i>`. Between them they finish exactly the
requested trials (see `loop.budget`), and each samples with its own seed
(`loop.study.claim_sampler_seed`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.executor.threads import ENV as THREADS_ENV
from regzoo.studies.loop.preflight import check_runs_dir
from regzoo.studies.loop.study import (
    StudyOutcome,
    count_finished,
    open_study,
    run_study,
    study_threads,
)
from regzoo.studies.results.console import print_summary, worker_console
from regzoo.studies.results.wandb_study import log_study_after_run
from regzoo.studies.scaling import ddp
from regzoo.studies.scaling.role import WORKER_ENV, Role, RunOptions, ScalingError, decide_role
from regzoo.studies.trial import tracking
from regzoo.studies.verdicts.commands import confirm_after_run

STOP_GRACE_S = 60  # after Ctrl-C, how long workers get to fail their trials and exit


def run(opts: RunOptions, cfg: StudyConfig, console: Console) -> int:
    """`regzoo run`: decide this process's role once, then play it; the exit code."""
    role = decide_role(opts, cfg)
    if role in (Role.WORKER, Role.RANK):
        limit_threads()
    plays: dict[Role, Callable[[RunOptions, StudyConfig, Console], int]] = {
        Role.ALONE: run_alone,
        Role.PARENT: launch,
        Role.WORKER: run_worker,
        Role.RANK: run_rank,
    }
    return plays[role](opts, cfg, console)


def run_alone(opts: RunOptions, cfg: StudyConfig, console: Console) -> int:
    """The study driven from this process (its trials trained here, or with `--workers N` in
    N spawned worker processes, each with its own GPU where there are some), then its
    summary."""
    gpus = gpu_plan(cfg, opts.workers, 1) if opts.workers > 1 else None
    outcome = run_study(
        cfg,
        **opts.study_args(),
        console=console,
        show_progress=opts.progress,
        workers=opts.workers,
        envs=[{"CUDA_VISIBLE_DEVICES": g} for g in gpus] if gpus else None,
    )
    print_summary(outcome, cfg, console)
    confirm_after_run(
        outcome.study, cfg, outcome.storage, outcome.wandb_mode, console, opts.population
    )
    log_study_after_run(outcome.study, cfg, outcome.wandb_mode, console, storage=outcome.storage)
    return 0


def run_worker(opts: RunOptions, cfg: StudyConfig, console: Console) -> int:
    """One of a parent's workers: trials until the study's budget is spent; no summary."""
    assert opts.worker is not None
    run_study(
        cfg,
        **opts.study_args(),
        console=worker_console(opts.worker),
        show_progress=False,
    )
    return 0


def run_rank(opts: RunOptions, cfg: StudyConfig, console: Console) -> int:
    """One rank of a DDP group: rank 0 runs the study, the others follow its trials."""
    ddp.run_rank(
        cfg,
        opts,
        console=worker_console(opts.worker) if opts.worker else console,
        summary=opts.worker is None,
    )
    return 0


def launch(opts: RunOptions, cfg: StudyConfig, console: Console) -> int:
    """`--devices-per-trial K`: start the workers, each a torchrun group of K ranks (DDP needs
    its launcher), wait for them, print the study's summary; 1 if a worker failed."""
    check_runs_dir(cfg.runs_dir)  # once here, not in each worker
    url = opts.url(cfg)
    target = opts.trials or cfg.trials
    n, k = opts.workers, opts.devices
    gpus = gpu_plan(cfg, n, k)
    threads = study_threads(cfg, workers=n * k).threads
    mode = tracking.resolve_mode(opts.wandb or cfg.wandb.mode)
    study = open_study(cfg, url)  # tables and study exist before N writers start
    already = count_finished(study)
    where = f"GPUs {', '.join(gpus)}" if gpus else f"CPU, {threads} thread(s) per process"
    console.print(
        f"[bold]study[/] {cfg.name}: {already} of {target} trials already finished in {url}; "
        f"{n} worker(s) x {k} device(s) per trial ({where})",
        soft_wrap=True,
    )
    command = worker_command(opts, url, target, mode)
    procs = []
    for i in range(n):
        env = {**os.environ, WORKER_ENV: f"{i}/{n}", "OMP_NUM_THREADS": str(threads)}
        env[THREADS_ENV] = str(threads)  # the worker's own choice reports the parent's
        env["PYTHONUNBUFFERED"] = "1"  # whole lines as they happen, not at exit
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        procs.append(subprocess.Popen(command, env=env))
    codes = wait_all(procs)
    outcome = StudyOutcome(study=study, already_finished=already, storage=url, wandb_mode=mode)
    print_summary(outcome, cfg, console)
    if not failed_workers(codes):
        confirm_after_run(study, cfg, url, mode, console, opts.population)
    log_study_after_run(study, cfg, mode, console, storage=url)
    failed = failed_workers(codes)
    if failed:
        console.print(f"[red]worker(s) failed:[/] {', '.join(failed)}")
    return 1 if failed else 0


def failed_workers(codes: list[int]) -> list[str]:
    return [f"w{i} (exit {code})" for i, code in enumerate(codes) if code != 0]


def worker_command(opts: RunOptions, url: str, target: int, mode: str) -> list[str]:
    """The command line of one worker: this `run` again, through regzoo's own module path (a
    project's own `studies/` folder is never run instead), under torchrun when K > 1."""
    run = ["-m", "regzoo", "run", opts.config, *(f"--set={o}" for o in opts.overrides)]
    run += ["--storage", url, "--trials", str(target), "--wandb", mode, "--no-progress"]
    if opts.timeout is not None:
        run += ["--timeout", str(opts.timeout)]
    if opts.population is not None:
        run += ["--population", str(opts.population)]
    if opts.devices == 1:
        return [sys.executable, *run]
    # --standalone: a rendezvous on a free local port, so N workers' groups never meet.
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={opts.devices}"]
    return [sys.executable, *torchrun, *run, "--devices-per-trial", str(opts.devices)]


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
