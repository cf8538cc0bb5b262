"""Run regzoo's benchmarks and rewrite the table in BENCHMARKS.md.

    .venv/bin/python -m benchmarks [--quick] [--only NAME ...] [--out BENCHMARKS.md]

`make bench` runs them all. `--quick` shrinks every benchmark to a smoke run (its figures are
not the ones to publish); `--only` reruns some and keeps the other rows of the table. The text
outside the table's markers is never touched.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchmarks._common import REPO, Figure, machine, write_table
from benchmarks.suite import SUITE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-run sizes (not for publishing)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"some of: {', '.join(SUITE)}")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="the file to update")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(SUITE))
    if unknown:
        print(
            f"--only {' '.join(unknown)}: unknown; choose from {', '.join(SUITE)}", file=sys.stderr
        )
        return 2
    with _quiet():
        _measure(args)
    return 0


def _measure(args: argparse.Namespace) -> None:
    names = [name for name in SUITE if not args.only or name in args.only]
    print(f"machine: {machine()}", flush=True)
    start = time.perf_counter()
    figures: list[Figure] = []
    for name in names:
        began = time.perf_counter()
        rows = SUITE[name](quick=args.quick)
        for row in rows if args.quick else ():
            row.machine += " (--quick)"
        figures += rows
        print(f"{name}: {len(rows)} figures in {time.perf_counter() - began:.0f} s", flush=True)
        for row in rows:
            verdict = {True: "met", False: "MISSED", None: ""}[row.met]
            print(f"  {row.figure}: {row.ours} (baseline {row.baseline}) {verdict}", flush=True)
        write_table(args.out, figures, order=list(SUITE))  # a crash later keeps what was measured
    print(f"all in {time.perf_counter() - start:.0f} s; table in {args.out}")


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's banners and hints would bury the figures."""
    from regzoo.studies.trial.console import quiet_training

    with quiet_training(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        yield


if __name__ == "__main__":
    sys.exit(main())
