"""Memory of a study process: its peak resident set over a 30-trial default study, and whether
it grows with the number of trials.

    .venv/bin/python -m benchmarks.memory [--trials 30] [--quick]

The study runs as the CLI runs it (`regzoo run studies/configs/default.yaml`, W&B
off, a fresh SQLite storage); its resident memory is read from /proc every half second. The
resident memory at each trial's end, against the trial's rank, gives a least-squares slope per
trial; the first trials are left out of the fit, as they load what the process keeps for good
(lazily imported modules, the data set, allocator pools). Target: over the whole study, the
slope times the number of trials stays under 2% of the peak.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks import pruning
from benchmarks._common import Figure, StudyRun, finished

WARM_UP = 2  # trials left out of the slope
GROWTH = 0.02  # the most the study may grow, as a share of its peak
MIB = 2**20


def rss_per_trial(run: StudyRun) -> list[int]:
    """Resident bytes at the end of each finished trial, in the order they ended."""
    ends = sorted(t.datetime_complete.timestamp() - run.started for t in finished(run))
    values = []
    for end in ends:
        before = [rss for at, rss in run.rss if at <= end]
        if before:
            values.append(before[-1])
    return values


def measure(*, trials: int = 30, quick: bool = False) -> dict[str, Any]:
    # The default config's own pruner: the pruning benchmark's run when both run in one process.
    run = pruning.study("median", trials=trials, quick=quick)
    per_trial = rss_per_trial(run)
    fitted = per_trial[WARM_UP:] if len(per_trial) > WARM_UP + 1 else per_trial
    slope = statistics.linear_regression(range(len(fitted)), fitted).slope if len(fitted) > 1 else 0
    return {
        "trials": len(per_trial),
        "peak": run.peak_rss,
        "first": per_trial[0] if per_trial else 0,
        "last": per_trial[-1] if per_trial else 0,
        "slope": slope,
    }


def figures(*, quick: bool = False) -> list[Figure]:
    trials = 4 if quick else 30
    r = measure(trials=trials, quick=quick)
    cmd = f".venv/bin/python -m benchmarks.memory --trials {trials}" + (" --quick" if quick else "")
    growth = r["slope"] * r["trials"] / r["peak"] if r["peak"] else float("nan")
    return [
        Figure(
            "memory",
            f"peak RSS of a {trials}-trial study",
            f"{r['peak'] / MIB:.0f} MiB",
            command=cmd,
        ),
        Figure(
            "memory",
            f"RSS slope per trial (trials {WARM_UP + 1}–{r['trials']}; RSS after the first "
            f"{r['first'] / MIB:.0f} MiB, after the last {r['last'] / MIB:.0f} MiB)",
            f"{r['slope'] / MIB:+.2f} MiB/trial",
            ratio=None,
            target=f"slope × trials ≤ {100 * GROWTH:.0f}% of peak",
            met=growth <= GROWTH,
            command=cmd,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="short trials")
    args = parser.parse_args()
    r = measure(trials=args.trials, quick=args.quick)
    print(
        f"{r['trials']} trials: peak {r['peak'] / MIB:.0f} MiB, after the first trial "
        f"{r['first'] / MIB:.0f} MiB, after the last {r['last'] / MIB:.0f} MiB, "
        f"slope {r['slope'] / MIB:+.3f} MiB/trial (from trial {WARM_UP + 1})"
    )


if __name__ == "__main__":
    main()
