"""Training throughput by batch size: samples per second of the default study's CNN through
regzoo and through a hand-written loop, on the device `accelerator="auto"` picks (a GPU when
there is one), at batch sizes 64 to 4096.

    .venv/bin/python -m benchmarks.throughput [--samples N] [--batch-sizes 64 256 ...]
    REGZOO_BENCH_TINY=1 .venv/bin/python -m benchmarks.throughput    # seconds: a smoke test

The data are the digits repeated to `--samples` training samples (16384 on CPU, 131072 on a GPU;
normalized as the default study does), so even a 4096 batch leaves several steps per epoch.
Training batches only; the sides alternate, each fit's first epoch is a warm-up, medians over
the rest. The ratio is regzoo's throughput over the hand-written loop's: where per-step costs
dominate (small batches, a fast device) it shows what the framework costs per step.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch

from benchmarks._common import TINY, Figure, alternate, command, device_name, fmt, median
from benchmarks.overhead import Clock, hand_epochs, regzoo_epochs
from regzoo.datamodules.base import ArrayDataModule, Arrays
from regzoo.datamodules.digits import Digits

BATCH_SIZES = (64, 256, 1024, 4096)


class RepeatedDigits(Digits):
    """The digits repeated `copies` times: a larger training split of the same images."""

    def __init__(self, *, copies: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.copies = copies

    def load(self) -> Arrays:
        arrays = super().load()
        x = np.concatenate([arrays.x] * self.copies)  # (copies·N, 1, 8, 8)
        return Arrays(x=x, y=np.concatenate([arrays.y] * self.copies))


def datamodule(samples: int, batch_size: int) -> ArrayDataModule:
    """Digits repeated to about `samples` training samples (64% of all: 20% test, 20% val)."""
    copies = max(1, math.ceil(samples / (1797 * 0.64)))
    return RepeatedDigits(copies=copies, batch_size=batch_size, normalize="standard")


def measure(
    *, samples: int, batch_sizes: tuple[int, ...], repeats: int, epochs: int
) -> dict[int, dict[str, float]]:
    """Median training samples per second of each side at each batch size."""
    result = {}
    for batch_size in batch_sizes:
        make_dm = partial(datamodule, samples, batch_size)
        n_train = len(make_dm().splits["train"][1])
        runs: dict[str, Callable[[], list[Clock]]] = {
            "hand-written": partial(hand_epochs, epochs, validate=False, make_dm=make_dm),
            "regzoo": partial(regzoo_epochs, epochs, validate=False, make_dm=make_dm),
        }
        samples_by_side = alternate(runs, repeats)
        result[batch_size] = {
            side: n_train / median([t[0] for run in times for t in run])
            for side, times in samples_by_side.items()
        }
    return result


@dataclass(frozen=True)
class Settings:
    samples: int
    batch_sizes: tuple[int, ...]
    repeats: int
    epochs: int


def settings(quick: bool) -> Settings:
    if TINY:
        return Settings(samples=512, batch_sizes=(64, 128), repeats=1, epochs=1)
    if quick:
        return Settings(samples=4096, batch_sizes=(64, 4096), repeats=1, epochs=1)
    # A GPU takes a 4096 batch in a few milliseconds: more samples keep an epoch measurable.
    samples = 131072 if torch.cuda.is_available() else 16384
    return Settings(samples=samples, batch_sizes=BATCH_SIZES, repeats=3, epochs=2)


def figures(*, quick: bool = False) -> list[Figure]:
    s = settings(quick)
    result = measure(**asdict(s))
    sizes = " ".join(str(b) for b in s.batch_sizes)
    cmd = command(
        "benchmarks.throughput",
        f"--samples {s.samples} --batch-sizes {sizes} --repeats {s.repeats} --epochs {s.epochs}",
    )
    return [
        Figure(
            "throughput",
            f"training samples/s at batch {batch_size} on {device_name()}, regzoo / hand-written",
            fmt(sides["regzoo"], "/s"),
            fmt(sides["hand-written"], "/s"),
            sides["regzoo"] / sides["hand-written"],
            command=cmd,
        )
        for batch_size, sides in result.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = settings(quick=False)  # tiny ones under REGZOO_BENCH_TINY=1
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=defaults.batch_sizes)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="timed per fit")
    args = parser.parse_args()
    result = measure(
        samples=args.samples,
        batch_sizes=tuple(args.batch_sizes),
        repeats=args.repeats,
        epochs=args.epochs,
    )
    print(f"device: {device_name()}; samples/s (training batches), medians")
    print(f"{'batch':>6} {'hand-written':>13} {'regzoo':>10} {'ratio':>6}")
    for batch_size, sides in result.items():
        hand, ours = sides["hand-written"], sides["regzoo"]
        print(f"{batch_size:>6} {hand:>13.0f} {ours:>10.0f} {ours / hand:>6.2f}")


if __name__ == "__main__":
    main()
