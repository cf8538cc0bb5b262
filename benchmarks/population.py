"""Populations: K models of one architecture trained as one batched model
(`regzoo.zoo.population`) against the hand-written loop that trains K models one after another,
each with its own optimizer, in member-steps per second (one optimizer step of one member).

    .venv/bin/python -m benchmarks.population [--quick] [--device cpu|cuda] [--sizes 1 8 32 64]
        [--cnn-sizes 1 4 8] [--compile | --no-compile] [--repeats N] [--threads N]
    REGZOO_BENCH_TINY=1 .venv/bin/python -m benchmarks.population    # seconds: a smoke test

Two workloads. The lecture's 2-D experiments: 100 `moons` points, an MLP with one hidden layer
of 32 units, full-batch SGD, each member with its own learning rate; the hand-written side is
K `nn.Sequential` MLPs, each with its own `torch.optim.SGD`. The digits CNN (channels 32, 64,
hidden 128, batchnorm) on batches of 64 with Adam; the hand-written side runs the same zoo
networks with `torch.optim.Adam`. The population is `StackedModels` of K zoo models with
`StackedOptimizer`; with `--compile` also its whole step under `torch.compile` (a failure to
compile is reported in its row); and the same population stepped by a Lightning Trainer, as
`regzoo.studies.population` trains one (manual optimization; here without its per-epoch
metrics, logs and checkpoints, so the figure is Lightning's loop alone).

Each side builds its K members once per K and takes warm-up steps; then timed runs of the same
number of steps alternate ABBA. A member-step rate is K · steps / seconds; each repeat's ratio
is taken against the hand-written run beside it, and the median and min-max of those ratios
are reported. One torch thread unless `--threads`, restored afterwards. Target: a population of
64 toy MLPs at least 8x the hand-written loop's member-steps per second.
"""

from __future__ import annotations

import argparse
import functools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmarks._common import TINY, Figure, alternate, command, fmt, machine, median
from benchmarks.overhead import Clock, clocks, since
from regzoo._checks import one_line
from regzoo.datamodules import create_datamodule
from regzoo.zoo import Classifier, create_model

TARGET = 8.0  # the 8.9x at K = 64, measured on this machine in plain PyTorch, one thread
TARGET_K = 64
HAND, POPULATION, COMPILED, LIGHTNING = (
    "hand-written loop",
    "population",
    "population, compiled",
    "population in a Trainer",
)
Batch = tuple[torch.Tensor, torch.Tensor]


# ---- the workloads -----------------------------------------------------------------------------


def toy_batches(device: torch.device) -> list[Batch]:
    """The whole 100-point `moons` set as one batch: `(100, 2)`, `(100,)`."""
    arrays = create_datamodule("moons", n_samples=100).load()
    return [(torch.as_tensor(arrays.x).to(device), torch.as_tensor(arrays.y).to(device))]


def digits_batches(device: torch.device, batch_size: int = 64) -> list[Batch]:
    """The digits' training split in full batches of `batch_size`: `(B, 1, 8, 8)`, `(B,)`."""
    dm = create_datamodule("digits", batch_size=batch_size)
    dm.setup()
    x, y = dm.splits["train"]
    n = len(y) // batch_size * batch_size
    xs, ys = x[:n].to(device).split(batch_size), y[:n].to(device).split(batch_size)
    return list(zip(xs, ys, strict=True))


@dataclass(frozen=True)
class Workload:
    """One architecture, its data and optimizer, as the members of a population share them.

    Args:
        lrs: The members' learning rates are spaced geometrically from the first to the second.
        member_steps: Member-steps per timed run (steps = member_steps / K, at least min_steps).
    """

    name: str
    data: Callable[[torch.device], list[Batch]]
    model: str
    hparams: dict[str, Any]
    num_classes: int
    optimizer: str
    lrs: tuple[float, float]
    member_steps: int
    min_steps: int

    def steps(self, k: int, scale: float = 1.0) -> int:
        """Steps per timed run at K members, `scale` times the usual (shorter runs)."""
        return max(1, math.ceil(self.min_steps * scale), int(self.member_steps * scale) // k)

    def lr(self, member: int, k: int) -> float:
        return float(np.geomspace(*self.lrs, num=k)[member]) if k > 1 else self.lrs[0]


TOY = Workload("toy MLP", toy_batches, "fnn", {"hidden": (32,)}, 2, "sgd", (0.01, 0.5), 2000, 100)
CNN = Workload(
    "digits CNN",
    digits_batches,
    "cnn",
    {"channels": (32, 64), "hidden": (128,), "batchnorm": True},
    10,
    "adam",
    (1e-3, 1e-2),
    160,
    10,
)


def members(work: Workload, k: int, input_shape: Sequence[int]) -> list[Classifier]:
    """K zoo models of `work`, member i seeded with i and trained at its own learning rate."""
    models = []
    for i in range(k):
        torch.manual_seed(i)
        models.append(
            create_model(
                work.model,
                input_shape=tuple(input_shape),
                num_classes=work.num_classes,
                optimizer=work.optimizer,
                lr=work.lr(i, k),
                **work.hparams,
            )
        )
    return models


# ---- the sides ---------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Side:
    """A way to train K members on `batches`: `step(x, y)` steps every member once."""

    def __init__(self, batches: list[Batch], device: torch.device) -> None:
        self.batches, self.device, self.k = batches, device, 0
        self._next = 0

    def time(self, steps: int) -> Clock:
        """Wall and CPU seconds for `steps` steps of every member, the device's work included."""
        synchronize(self.device)
        start = clocks()
        self.run(steps)
        synchronize(self.device)
        return since(start)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step(*self._batch())

    def _batch(self) -> Batch:
        batch = self.batches[self._next % len(self.batches)]
        self._next += 1
        return batch

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError


class HandLoop(Side):
    """The baseline: one model after another, each with its own torch optimizer, as a
    hand-written search trains its trials."""

    def __init__(self, work: Workload, models: list[Classifier], batches: list[Batch]) -> None:
        super().__init__(batches, batches[0][0].device)
        self.k = len(models)
        self.nets = [hand_network(work, m).to(self.device).train() for m in models]
        optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[work.optimizer]
        self.optimizers = [
            optimizer(net.parameters(), lr=work.lr(i, self.k)) for i, net in enumerate(self.nets)
        ]

    def run(self, steps: int) -> None:
        start = self._next
        for net, optimizer in zip(self.nets, self.optimizers, strict=True):
            self._next = start  # every model sees the same batches
            for _ in range(steps):
                x, y = self._batch()
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()


def hand_network(work: Workload, model: Classifier) -> nn.Module:
    """The toy MLP as a student writes it (with the zoo model's initial weights); for the CNN,
    the zoo model's own network."""
    if work.model != "fnn":
        return nn.Sequential(model.pipeline, model.net)
    net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    zoo = [m for m in model.net.modules() if isinstance(m, nn.Linear)]
    for mine, theirs in zip([net[0], net[2]], zoo, strict=True):
        mine.load_state_dict(theirs.state_dict())
    return net


class Population(Side):
    """The K members as one `StackedModels` with one `StackedOptimizer`; with `compiled`, the
    whole step under `torch.compile`."""

    def __init__(self, models: list[Classifier], batches: list[Batch], *, compiled: bool) -> None:
        from regzoo.zoo.population import StackedModels, StackedOptimizer

        super().__init__(batches, batches[0][0].device)
        self.k = len(models)
        self.stack = StackedModels(models)
        self.stack.to(self.device)
        self.stack.train()
        self.optimizer = StackedOptimizer(self.stack)
        self.names = list(self.stack.params)
        # As the studies' PopulationModule steps: no penalty term when no member has one.
        self.penalized = any(h.get("l1") or h.get("l2") for h in self.stack.hparams)
        step = torch.compile(self._step) if compiled else self._step
        self.step = step  # type: ignore[method-assign]

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        logits = self.stack.forward(x)  # (B, *raw) -> (K, B, C)
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(self.k), reduction="none")
        loss = ce.view(self.k, -1).mean(1)  # (K·B,) -> (K,)
        params = [self.stack.params[n] for n in self.names]
        grads = dict(zip(self.names, torch.autograd.grad(loss.sum(), params), strict=True))
        self.optimizer.step(self.stack.add_penalty(grads) if self.penalized else grads)


class InTrainer(Side):
    """The same population stepped by a Lightning Trainer (manual optimization, no logging,
    no validation): what Lightning's loop adds per step. Each timed run is one fit."""

    def __init__(self, models: list[Classifier], batches: list[Batch]) -> None:
        super().__init__(batches, batches[0][0].device)
        self.k = len(models)
        self.module = PopulationSteps(Population(models, batches, compiled=False))

    def time(self, steps: int) -> Clock:
        timer = EpochTimer(self.device)
        trainer = L.Trainer(
            max_epochs=1,
            accelerator=self.device.type,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[timer],
        )
        batches = [self._batch() for _ in range(steps)]  # served as they are
        loader: DataLoader[Batch] = DataLoader(batches, batch_size=None)  # type: ignore[arg-type]
        trainer.fit(self.module, train_dataloaders=loader)
        return timer.seconds


class PopulationSteps(L.LightningModule):
    """A population's step as a LightningModule's manual-optimization training step."""

    def __init__(self, population: Population) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.population = population

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.population._step(*batch)

    def configure_optimizers(self) -> None:
        return None


class EpochTimer(L.Callback):
    """Wall and CPU seconds of the (one) training epoch, the device's work included."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, (math.nan, math.nan)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self._start = clocks()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.seconds = since(self._start)


# ---- measuring ---------------------------------------------------------------------------------


@dataclass
class Result:
    """One workload at one K: each side's member-steps per wall second and per CPU second,
    per repeat in run order, and the sides that could not run (one line each)."""

    workload: str
    k: int
    steps: int
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_rates: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def ratios(self, side: str, *, cpu: bool = False) -> list[float]:
        """Each repeat's rate of `side` over the hand-written run's beside it."""
        rates = self.cpu_rates if cpu else self.rates
        return [a / b for a, b in zip(rates[side], rates[HAND], strict=True)]


@dataclass(frozen=True)
class Settings:
    """What one run measures (`settings()` gives the suite's, the CLI may change them)."""

    device: str
    sizes: tuple[int, ...]  # K of the toy MLP
    cnn_sizes: tuple[int, ...]  # K of the digits CNN
    repeats: int
    compiled: bool
    threads: int
    scale: float  # of every workload's member-steps per timed run


def settings(quick: bool, device: str | None = None) -> Settings:
    """The sizes, repeats and run lengths for `device` (default: cuda where available)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    if TINY:
        return Settings(device, (1, 3), (1, 2), 1, False, 1, 0.02)
    sizes = (1, 8, 32, 64, 128, 256) if cuda else (1, 8, 32, 64)
    cnn_sizes = (1, 8, 32, 64) if cuda else (1, 4, 8)
    # Compiling costs a minute per K on a CPU, and mostly saves kernel launches: a GPU's.
    return Settings(device, sizes, cnn_sizes, 1 if quick else 7, cuda, 1, 0.25 if quick else 1)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n`, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(
    work: Workload,
    sizes: Sequence[int],
    *,
    device: str,
    repeats: int,
    compiled: bool = False,
    lightning: bool = False,
    scale: float = 1.0,
) -> list[Result]:
    """Each side's member-steps/s at each K, the sides alternating ABBA."""
    dev = torch.device(device)
    batches = work.data(dev)
    results = []
    for k in sizes:
        steps = work.steps(k, scale)
        result = Result(work.name, k, steps)
        sides = _sides(work, k, batches, compiled=compiled, lightning=lightning, result=result)
        runs: dict[str, Callable[[], Clock]] = {
            name: functools.partial(side.time, steps) for name, side in sides.items()
        }
        seconds = alternate(runs, repeats)
        result.rates = {name: [k * steps / t[0] for t in ts] for name, ts in seconds.items()}
        result.cpu_rates = {name: [k * steps / t[1] for t in ts] for name, ts in seconds.items()}
        results.append(result)
        del sides, runs
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _sides(
    work: Workload,
    k: int,
    batches: list[Batch],
    *,
    compiled: bool,
    lightning: bool,
    result: Result,
) -> dict[str, Side]:
    """The sides at K, each warmed up; a population that fails to compile is left out and
    recorded in `result.failed`."""
    shape = batches[0][0].shape[1:]
    warmup = max(2, result.steps // 10)
    sides: dict[str, Side] = {
        HAND: HandLoop(work, members(work, k, shape), batches),
        POPULATION: Population(members(work, k, shape), batches, compiled=False),
    }
    if compiled:
        torch.compiler.reset()  # a fresh cache for each K: no recompile limit is reached
        try:
            sides[COMPILED] = Population(members(work, k, shape), batches, compiled=True)
            sides[COMPILED].run(warmup)
        except Exception as exc:  # the figure's row says why, instead of the run crashing
            sides.pop(COMPILED, None)
            result.failed[COMPILED] = f"compile failed: {one_line(exc, lines=1)}"
    if lightning:
        sides[LIGHTNING] = InTrainer(members(work, k, shape), batches)
    for side in sides.values():
        side.time(warmup)
    return sides


# ---- reporting ---------------------------------------------------------------------------------


def run(s: Settings, *, lightning: bool = True) -> list[Result]:
    """Both workloads under settings `s`, in `s.threads` torch threads."""
    with threads(s.threads):
        common: dict[str, Any] = {
            "device": s.device,
            "repeats": s.repeats,
            "compiled": s.compiled,
            "lightning": lightning,
            "scale": s.scale,
        }
        return measure(TOY, s.sizes, **common) + measure(CNN, s.cnn_sizes, **common)


def cli_args(s: Settings) -> str:
    """The options of `python -m benchmarks.population` that repeat settings `s`."""
    args = [
        *(["--quick"] if s.scale < 1 and not TINY else []),
        f"--device {s.device}",
        f"--sizes {' '.join(map(str, s.sizes))}",
        f"--cnn-sizes {' '.join(map(str, s.cnn_sizes))}",
        f"--repeats {s.repeats}",
        *(["--compile"] if s.compiled else []),
        *([f"--threads {s.threads}"] if s.threads != 1 else []),
    ]
    return " ".join(args)


def figures(*, quick: bool = False) -> list[Figure]:
    s = settings(quick)
    cmd = command("benchmarks.population", cli_args(s))
    return [row for result in run(s) for row in result_figures(result, s, cmd)]


def result_figures(result: Result, s: Settings, cmd: str) -> list[Figure]:
    """One row per side against the hand-written loop (a side that failed: its one line)."""
    hand = fmt(median(result.rates[HAND]), "/s")
    where = f"{s.device}, {s.threads} thread{'s' * (s.threads > 1)}"
    rows = []
    for side in [*result.rates, *result.failed]:
        if side == HAND:
            continue
        name = f"{result.workload}, K={result.k}: member-steps/s, {side} vs a loop over the models"
        target = result.workload == TOY.name and result.k == TARGET_K and side == POPULATION
        if side in result.failed:
            failed = result.failed[side]
            rows.append(Figure("population", f"{name} ({where})", failed, hand, command=cmd))
            continue
        ratios, cpu = result.ratios(side), median(result.ratios(side, cpu=True))
        spread = f"ratio {min(ratios):.2f}-{max(ratios):.2f}× over {len(ratios)} repeats"
        spread += f", {cpu:.2f}× in CPU time"
        rows.append(
            Figure(
                "population",
                f"{name} ({where}; {spread})",
                fmt(median(result.rates[side]), "/s"),
                hand,
                median(ratios),
                f"≥ {TARGET:g}×" if target else "-",
                median(ratios) >= TARGET if target else None,
                cmd,
            )
        )
    return rows


def table(results: Sequence[Result]) -> str:
    """The results as plain text, a line per side: median member-steps/s, then its ratio to
    the hand-written loop (wall time: median and min-max; CPU time: median)."""
    lines = [
        f"{'workload':<11} {'K':>4} {'steps':>5}  {'side':<24} {'member-steps/s':>14}  "
        f"{'ratio':>6} {'min-max':>11}  {'CPU ratio':>9}"
    ]
    for r in results:
        for side in [*r.rates, *r.failed]:
            head = f"{r.workload:<11} {r.k:>4} {r.steps:>5}  {side:<24}"
            if side in r.failed:
                lines.append(f"{head} {r.failed[side]}")
                continue
            line = f"{head} {median(r.rates[side]):>12.0f}/s"
            if side != HAND:
                q, cpu = r.ratios(side), r.ratios(side, cpu=True)
                spread = f"{min(q):.2f}-{max(q):.2f}"
                line += f"  {median(q):>5.2f}× {spread:>11}  {median(cpu):>8.2f}×"
            lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.population", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="one repeat, shorter runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    parser.add_argument("--sizes", type=int, nargs="+", help="population sizes K, toy MLP")
    parser.add_argument("--cnn-sizes", type=int, nargs="+", help="population sizes K, digits CNN")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="also the population under torch.compile (default: on cuda only)",
    )
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    numbers = [*(args.sizes or ()), *(args.cnn_sizes or ()), args.repeats or 1, args.threads]
    if any(n < 1 for n in numbers):
        parser.error("--sizes, --cnn-sizes, --repeats and --threads take integers >= 1")
    d = settings(args.quick, args.device)
    s = Settings(
        d.device,
        tuple(args.sizes or d.sizes),
        tuple(args.cnn_sizes or d.cnn_sizes),
        args.repeats or d.repeats,
        d.compiled if args.compile is None else args.compile,
        args.threads,
        d.scale,
    )
    from regzoo.studies.trial.console import quiet_training

    print(f"machine: {machine()}")
    print(f"command: {command('benchmarks.population', cli_args(s))}", flush=True)
    with quiet_training(), warnings.catch_warnings():  # Lightning's banners and hints
        warnings.filterwarnings("ignore", module="lightning")
        results = run(s)
    print("member-steps/s: medians of wall-time rates; ratios to the hand-written loop")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
