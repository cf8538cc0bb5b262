"""How many intra-op threads torch gets for a study's training: decided once, from the work and
the cores, overridable, and shown in the study's header.

    >>> choice = choose_threads(macs_per_sample=2368, batch_size=64, cores=2)
    >>> choice.threads, choice.reason
    (1, '1 of 2 cores: 0.15 M multiply-adds a batch is too small to split')
    >>> choose_threads(macs_per_sample=347392, batch_size=64, cores=2).reason
    '2 cores: 22 M multiply-adds a batch'
    >>> choose_threads(macs_per_sample=347392, batch_size=64, workers=2, cores=2).reason
    '1 of 2 cores: 2 workers share them'

The rule, in order:

1. An override wins: the `override` argument, else the environment variable `REGZOO_THREADS`
   (an integer >= 1; empty counts as unset).
2. With several workers on the machine, each gets its share of the cores, at least one thread.
3. Otherwise, work too small to split runs on one thread, and larger work on every usable core.
   The work is the multiply-adds of one forward pass over a batch: the model's multiply-adds
   per sample (`macs_per_sample`, counted on the built model, whatever it is called) x batch
   size x population members.

Why, measured on the 2-core VM (AMD EPYC, torch 2.x CPU; BENCHMARKS.md, 'Shared machines'):

- Idle machine, the earlier default study (CNN [16, 32], hidden [64], 13.7k parameters, batch
  64): 32.6 s wall and 31.8 s CPU with one thread, 38.9 s wall and 64.5 s CPU with two. Its
  forward pass is 5.9 M multiply-adds a batch (91,776 a sample): splitting it costs more in
  synchronisation than it saves.
- Idle machine, the current default study (batchnorm CNN [32, 64], hidden [128], 53k
  parameters, batch 64): 92 s with one thread, 83 to 90 s with two: at 22 M multiply-adds a
  batch (347,392 a sample), two threads win a little, so the rule must not always pick one.
- Busy machine (load 6.6, other engineers' tests and studies on the 2 cores), one epoch of
  the digits training split (18 batches of 64) in a plain loop (forward, cross-entropy, backward,
  Adam step), median of 8 repeats in ABBA order, 1 vs 2 threads: the 2-D toy MLP (hidden 32,
  100 points, full batch, 20 steps) 37 vs 174 ms; FNN hidden (32,) 62 vs 198 ms; CNN [4, 8]
  108 vs 579 ms; CNN [32, 64] 305 vs 3113 ms (10x). A thread that waits for its sibling on a
  taken core spins, so on a shared machine even the default CNN is faster on one thread: give
  such a machine `REGZOO_THREADS=1`.

(Multiply-adds per sample of the digits models, from `macs_per_sample` on torch 2.13: CNN
[16, 32] hidden [64] 91,776; batchnorm CNN [32, 64] hidden [128] 347,392; CNN [4, 8] 12,288;
FNN hidden (32,) 2,368.)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regzoo._checks import UserError, is_int
from regzoo.studies.config.schema import StudyConfig

if TYPE_CHECKING:
    from torch import nn

ENV = "REGZOO_THREADS"
# Multiply-adds of one forward pass over a batch (`step_work`) above which the work is split
# over the cores. The crossover measured on the idle 2-core VM lies between the CNN [16, 32]
# default (5.9 M: one thread 32.6 s, two 38.9 s) and the CNN [32, 64] default (22 M: one thread
# 92 s, two 83 to 90 s).
SPLIT_WORK = 16_000_000


class ThreadsError(UserError):
    """A thread count that is not a positive integer (REGZOO_THREADS or an override)."""


@dataclass(frozen=True)
class ThreadChoice:
    """Torch's intra-op thread count for the work, and why, in a few words for the header."""

    threads: int
    reason: str


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(
    *,
    macs_per_sample: int | None,
    batch_size: int,
    population: int = 1,
    workers: int = 1,
    cores: int | None = None,
    override: int | None = None,
) -> ThreadChoice:
    """The thread count for training a model of `macs_per_sample` multiply-adds a sample
    (`macs_per_sample()`; None when unknown: then the work counts as large) at `batch_size`,
    `population` members batched as one model, in each of `workers` processes on `cores` cores
    (default: `usable_cores()`).

    Raises:
        ThreadsError: `override` or REGZOO_THREADS is not an integer >= 1.
    """
    forced = _override(override)
    if forced is not None:
        return forced
    cores = cores or usable_cores()
    if workers > 1:
        share = max(1, cores // workers)
        return ThreadChoice(share, f"{share} of {cores} cores: {workers} workers share them")
    step = None if macs_per_sample is None else step_work(macs_per_sample, batch_size, population)
    work = "work not measured" if step is None else f"{_millions(step)} M multiply-adds a batch"
    if population > 1:
        work += f", population {population}"
    if cores == 1:
        return ThreadChoice(1, f"1 core: {work}")
    if step is not None and step < SPLIT_WORK:
        return ThreadChoice(1, f"1 of {cores} cores: {work} is too small to split")
    return ThreadChoice(cores, f"{cores} cores: {work}")


def step_work(macs_per_sample: int, batch_size: int, population: int = 1) -> int:
    """Multiply-adds of one forward pass over a batch: what `SPLIT_WORK` is measured in."""
    return macs_per_sample * batch_size * population


def _millions(n: int) -> str:
    """`n` in millions, two significant digits or whole ones from ten on: 0.15, 5.9, 22."""
    m = n / 1e6
    return f"{m:.0f}" if m >= 10 else f"{m:.2g}"


def macs_per_sample(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of `model`'s forward pass over one sample of `input_shape` (what `model`
    takes, raw), counted by torch's `FlopCounterMode` on zeros in eval mode (FLOPs / 2).

    torch counts matrix products and convolutions, not elementwise ops, pooling or
    normalization (small next to them). A recurrent layer (`nn.RNNBase`) counts as its
    parameters, each weight used once a sample: torch counts every step of a GRU and a plain
    RNN but no step of an LSTM (torch 2.13, CPU), and a recurrent layer's steps are small
    sequential products, each too small to split over threads whatever their number.

        >>> from torch import nn
        >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 10))
        >>> macs_per_sample(mlp, (1, 8, 8))  # 64·32 + 32·10
        2368
        >>> macs_per_sample(nn.Sequential(nn.GRU(8, 16)), (8, 8))  # its parameters
        1248
    """
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    recurrent: list[int] = []  # FLOPs counted inside each recurrent layer

    def enter(module: nn.Module, args: Any) -> None:
        recurrent.append(-counter.get_total_flops())

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        recurrent[-1] += counter.get_total_flops()

    layers = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    hooks = [
        h
        for m in layers
        for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))
    ]
    training = model.training
    try:
        model.eval()  # batchnorm takes a batch of one
        with counter, torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    weights = sum(p.numel() for m in layers for p in m.parameters())
    return (counter.get_total_flops() - sum(recurrent)) // 2 + weights


def fixed_work(cfg: StudyConfig) -> tuple[int | None, int]:
    """`macs_per_sample` of the config's model as its fixed values build it (None for a
    LightningModule of the user's, whose forward may take anything), and its batch size: what
    `choose_threads` weighs for a study. Loads no data from a regzoo datamodule."""
    from regzoo.studies.trial.fixed import fixed_model  # Lightning: not for `usable_cores`
    from regzoo.zoo import Classifier

    fixed = fixed_model(cfg)
    if not isinstance(fixed.model, Classifier):
        return None, fixed.batch_size
    return macs_per_sample(fixed.model, fixed.input_shape), fixed.batch_size


def _override(override: int | None) -> ThreadChoice | None:
    if override is not None:
        if not is_int(override, 1):
            raise ThreadsError(f"threads={override!r} is invalid; allowed: an integer >= 1")
        return ThreadChoice(override, f"{override} asked for")
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    if not text.isdecimal() or int(text) < 1:
        raise ThreadsError(
            f"{ENV}={text!r} is invalid; allowed: an integer >= 1 (torch threads per process), "
            "or unset to choose from the work and the cores"
        )
    return ThreadChoice(int(text), f"{ENV}={int(text)}")


def apply(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count for the rest of the process (an entry point's call)."""
    import torch

    torch.set_num_threads(choice.threads)


@contextmanager
def threads_for(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """Run the block with `choice.threads` threads, then give torch back its previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(before)


def config_work(cfg: StudyConfig) -> tuple[int | None, int]:
    """`fixed_work`, measured once per config (a study's trials, a population's members and
    the jobs of one experiment share theirs)."""
    return _cached_work(cfg.model_dump_json())


@functools.lru_cache(maxsize=64)
def _cached_work(config: str) -> tuple[int | None, int]:
    return fixed_work(StudyConfig.model_validate_json(config))


def job_threads(cfg: StudyConfig, members: int, *, workers: int = 1) -> ThreadChoice:
    """The threads a job gets: from its model's multiply-adds per sample, its batch size and
    its members (`choose_threads`), measured once per config."""
    macs, batch_size = config_work(cfg)
    return choose_threads(
        macs_per_sample=macs, batch_size=batch_size, population=members, workers=workers
    )
