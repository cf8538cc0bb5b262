"""How many intra-op threads torch gets for a study's training: decided once, from the work and
the cores, overridable, and shown in the study's header.

    >>> choice = choose_threads(model="fnn", n_parameters=2410, batch_size=64, cores=2)
    >>> choice
    ThreadChoice(threads=1, reason='1 of 2 cores: fnn, batch 64 is too small to split')
    >>> choose_threads(model="cnn", n_parameters=53194, batch_size=64, cores=2).reason
    '2 cores: cnn, batch 64'
    >>> choose_threads(model="cnn", n_parameters=53194, batch_size=64, workers=2, cores=2).reason
    '1 of 2 cores: 2 workers share them'

The rule, in order:

1. An override wins: the `override` argument, else the environment variable `REGZOO_THREADS`
   (an integer >= 1; empty counts as unset).
2. With several workers on the machine, each gets its share of the cores, at least one thread.
3. Otherwise, work too small to split runs on one thread, and larger work on every usable core.
   The work is the multiply-adds of one forward pass: parameters x batch size x population
   members x how often each weight is used per sample (`WEIGHT_REUSE`).

Why, measured on the 2-core VM (AMD EPYC, torch 2.x CPU; BENCHMARKS.md, 'Shared machines'):

- Idle machine, the earlier default study (CNN [16, 32], 13.7k parameters, batch 64): 32.6 s
  wall and 31.8 s CPU with one thread, 38.9 s wall and 64.5 s CPU with two. Its step is ~7 M
  multiply-adds: splitting it costs more in synchronisation than it saves.
- Idle machine, the current default study (batchnorm CNN [32, 64], 53k parameters, batch 64):
  92 s with one thread, 83 to 90 s with two: at ~27 M multiply-adds a step, two threads win a
  little, so the rule must not always pick one.
- Busy machine (load 6.6, other engineers' tests and studies on the 2 cores), one epoch of
  the digits training split (18 batches of 64) in a plain loop (forward, cross-entropy, backward,
  Adam step), median of 8 repeats in ABBA order, 1 vs 2 threads: the 2-D toy MLP (hidden 32,
  100 points, full batch, 20 steps) 37 vs 174 ms; FNN hidden (32,) 62 vs 198 ms; CNN [4, 8]
  108 vs 579 ms; CNN [32, 64] 305 vs 3113 ms (10x). A thread that waits for its sibling on a
  taken core spins, so on a shared machine even the default CNN is faster on one thread: give
  such a machine `REGZOO_THREADS=1`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from regzoo._checks import UserError, is_int

ENV = "REGZOO_THREADS"
# Multiply-adds of one forward pass over a batch (`step_work`) above which the work is split
# over the cores. The crossover measured on the idle 2-core VM lies between the CNN [16, 32]
# default (~7 M: one thread 32.6 s, two 38.9 s) and the CNN [32, 64] default (~27 M: one thread
# 92 s, two 83 to 90 s).
SPLIT_WORK = 16_000_000
# Multiply-adds per parameter and sample: a convolution's weights are used at every position
# (6.5 to 7.2 for the digits CNNs, counted with forward hooks; more on larger images). A dense or
# recurrent layer uses each weight once per sample (a recurrent one once per step, but its steps
# are small sequential matmuls, each too small to split).
WEIGHT_REUSE = {"cnn": 8}


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
    model: str,
    n_parameters: int | None,
    batch_size: int,
    population: int = 1,
    workers: int = 1,
    cores: int | None = None,
    override: int | None = None,
) -> ThreadChoice:
    """The thread count for training `model` (`n_parameters` trainable, None when unknown: then
    the work counts as large) at `batch_size`, `population` members batched as one model, in
    each of `workers` processes on `cores` cores (default: `usable_cores()`).

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
    work = f"{model}, batch {batch_size}" + (f", population {population}" if population > 1 else "")
    if cores == 1:
        return ThreadChoice(1, f"1 core: {work}")
    small = n_parameters is not None and (
        step_work(model, n_parameters, batch_size, population) < SPLIT_WORK
    )
    if small:
        return ThreadChoice(1, f"1 of {cores} cores: {work} is too small to split")
    return ThreadChoice(cores, f"{cores} cores: {work}")


def step_work(model: str, n_parameters: int, batch_size: int, population: int = 1) -> int:
    """Multiply-adds of one forward pass over a batch, roughly: what `SPLIT_WORK` is measured in."""
    return n_parameters * batch_size * population * WEIGHT_REUSE.get(model, 1)


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
