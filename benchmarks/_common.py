"""What every benchmark shares: the machine's description, the `Figure` record, alternating
repeats with medians, studies run as the CLI runs them (with their memory sampled), and the
BENCHMARKS.md table writer."""

from __future__ import annotations

import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

REPO = Path(__file__).resolve().parents[1]
# REGZOO_BENCH_TINY=1: seconds-long settings where a benchmark has them (tests, smoke runs).
TINY = os.environ.get("REGZOO_BENCH_TINY") == "1"
T = TypeVar("T")
K = TypeVar("K")


# ---- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere), shortened."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        name = found.group(1) if found else platform.processor()
    except OSError:
        name = platform.processor()
    name = re.sub(r"\((R|TM|tm)\)|\bCPU\b|\s@.*$", "", name or platform.machine())
    return " ".join(name.split())


def device_name() -> str:
    """`cuda (NAME)` when a GPU is visible, else `cpu`: what accelerator="auto" will pick."""
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> str:
    """One line naming the machine a figure was measured on, with its 1-minute load average
    (other processes' work inflates wall times; see the CPU-time figures)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu_model()}, {cores()} cores, torch {torch.__version__}, {device_name()}, "
        f"load {load:.1f}"
    )


# ---- figures -------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of BENCHMARKS.md: our value against the baseline's, and the target if any.

    `ratio` is oriented so that the target reads naturally (e.g. ours / hand-written for an
    overhead, none / ours for epochs saved); `met` is None where there is no target.
    """

    benchmark: str
    figure: str
    ours: str
    baseline: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None
    command: str = ""
    machine: str = field(default_factory=machine)

    def row(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}×"
        met = {True: "yes", False: "**no**", None: "-"}[self.met]
        cells = [self.benchmark, self.figure, self.ours, self.baseline, ratio, self.target, met]
        return [*cells, f"`{self.command}`" if self.command else "-", self.machine]


def alternate(runs: Mapping[K, Callable[[], T]], repeats: int) -> dict[K, list[T]]:
    """Call each run `repeats` times, alternating ABBA (A B, B A, ...) so that load drifting
    over time and whichever side runs second fall on every side alike."""
    names = list(runs)
    samples: dict[K, list[T]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(runs[name]())
    return samples


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float, unit: str = "", digits: int = 3) -> str:
    """A value with `digits` significant digits and its unit."""
    text = f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return f"{text} {unit}".strip()


def command(module: str, *args: str) -> str:
    """The command line that reproduces a figure on its own."""
    return " ".join([".venv/bin/python -m", module, *args])


# ---- studies as the CLI runs them ------------------------------------------------------------


@dataclass
class StudyRun:
    """A finished `regzoo run` process: its trials and how it ran."""

    trials: list[Any]  # FrozenTrial, in number order
    wall: float  # seconds from process start to exit
    rss: list[tuple[float, int]]  # (seconds since start, resident bytes) samples
    peak_rss: int  # bytes, the kernel's high-water mark of the process
    started: float  # time.time() at process start, to place trials on the rss clock
    best: Any = None  # the best complete trial as the study ranks it (tie-break included)
    confirmed: Any = None  # verdicts.stats.Summary of the confirmed test/acc, where confirmed


def study_command(
    config: Path, storage: str, *, trials: int | None, args: Sequence[str] = ()
) -> list[str]:
    cmd = [sys.executable, "-m", "regzoo", "run", str(config), "--storage", storage]
    cmd += ["--no-progress", *(["--trials", str(trials)] if trials else []), *args]
    return cmd


def run_study_process(
    config: Path,
    *,
    trials: int | None = None,
    args: Sequence[str] = (),
    stop: Callable[[list[Any]], bool] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> StudyRun:
    """Run the study CLI with a fresh SQLite storage in a temporary folder (its cwd, so runs/
    and W&B files land there), sampling its resident memory every `poll_s` seconds.

    `stop(trials)` is asked every ~5 s with the trials stored so far; the study is interrupted
    (SIGINT, as Ctrl-C) when it answers True or when `timeout_s` passes.
    """
    with tempfile.TemporaryDirectory(prefix="regzoo-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'studies.db'}"
        cmd = study_command(config, url, trials=trials, args=args)
        env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
        started, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, preexec_fn=_sigint_default
        )
        rss: list[tuple[float, int]] = []
        peak, last_check, interrupted = 0, start, False
        while proc.poll() is None:
            now = time.perf_counter()
            current, high = _proc_memory(proc.pid)
            if current:
                rss.append((now - start, current))
                peak = max(peak, high)
            timed_out = timeout_s is not None and now - start > timeout_s
            if stop is not None and now - last_check > 5:
                last_check = now
                timed_out = timed_out or stop(_stored_trials(url, config))
            if timed_out:  # Ctrl-C: the study finishes its bookkeeping and exits
                _interrupt(proc)
                interrupted = True
                break
            time.sleep(poll_s)
        wall = time.perf_counter() - start
        if proc.returncode != 0 and not interrupted:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
        trials_done = _stored_trials(url, config)
        best, confirmed = _verdict(url, config)
    return StudyRun(trials_done, wall, rss, peak, started, best, confirmed)


def _sigint_default() -> None:
    """In the child: take SIGINT back from SIG_IGN (inherited from a background launch), so
    the study can be stopped with Ctrl-C's signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(proc: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    """SIGINT, as Ctrl-C; SIGTERM, then SIGKILL, if the study has not exited after `grace_s`."""
    for send in (lambda: proc.send_signal(signal.SIGINT), proc.terminate, proc.kill):
        send()
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _stored_trials(url: str, config: Path) -> list[Any]:
    import optuna

    from regzoo.studies import load_config
    from regzoo.studies.executor.storage import (
        open_storage,  # its lock: the study may be creating it
    )

    name = load_config(config).name
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:  # not created yet
        return []
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _verdict(url: str, config: Path) -> tuple[Any, Any]:
    """The study's best trial (as `regzoo list` ranks it) and its confirmed test/acc, if any."""
    import optuna

    from regzoo.studies import load_config
    from regzoo.studies.executor.storage import open_storage
    from regzoo.studies.loop.read import ranked_trials
    from regzoo.studies.verdicts.read import read_verdicts

    try:
        study = optuna.load_study(study_name=load_config(config).name, storage=open_storage(url))
    except KeyError:
        return None, None
    ranked = ranked_trials(study)
    return (ranked[0] if ranked else None), read_verdicts(study, url).confirmed()


def _proc_memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from /proc; zeros when the process is gone or not Linux."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.MULTILINE))
    return int(values.get("VmRSS", 0)) * 1024, int(values.get("VmHWM", 0)) * 1024


def finished(run: StudyRun) -> list[Any]:
    """The complete and pruned trials of a run."""
    from optuna.trial import TrialState

    return [t for t in run.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# ---- BENCHMARKS.md -------------------------------------------------------------------------

HEADER = ["benchmark", "figure", "ours", "baseline", "ratio", "target", "met", "command", "machine"]
START, END = "<!-- table: written by `python -m benchmarks` -->", "<!-- /table -->"
PREAMBLE = """# Benchmarks

`make bench` (`python -m benchmarks`) measures every figure below and rewrites this table;
the text after it is written by hand. Ratios are oriented so that the target reads as written.
"""


def write_table(path: Path, figures: list[Figure], order: Sequence[str]) -> None:
    """Rewrite the table in `path` with `figures`; rows of benchmarks that were not rerun
    (`--only`) are kept, everything outside the table markers is left as it is."""
    text = path.read_text() if path.is_file() else PREAMBLE + f"\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    old_table, tail = rest.split(END, 1)
    rerun = {f.benchmark for f in figures}
    kept = [row for row in _rows(old_table) if row[0] not in rerun]
    rows = kept + [f.row() for f in figures]
    rank = {name: i for i, name in enumerate(order)}
    rows.sort(key=lambda row: rank.get(row[0], len(rank)))  # stable: figures keep their order
    lines = [_line(HEADER), _line(["---"] * len(HEADER)), *(_line(r) for r in rows)]
    path.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _rows(table: str) -> list[list[str]]:
    rows = []
    for line in table.strip().splitlines()[2:]:  # past the header and its rule
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == len(HEADER):
            rows.append(cells)
    return rows
