"""What the overfitting view costs a run: the training split evaluated from the kept checkpoint
(`train_eval/...`, `trial.train.train_eval`) against the whole run's time, as a ratio (the
issue's target: at most 10% of a trial).

.venv/bin/python -m benchmarks.overfitting [--configs default fnn-mnist1d] [--seeds 3]

Each config's fixed values train as `regzoo train` trains them (early stopping included), one
run per seed; then the kept checkpoint's training-split evaluation is timed alone, the median of
five. The run's own seconds include that evaluation and the ECE of every validation epoch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, TINY, Figure, command, fmt, machine
from regzoo.datamodules import create_datamodule
from regzoo.studies import load_config
from regzoo.studies.config.search import split_params
from regzoo.studies.trial.console import quiet_training
from regzoo.studies.trial.spec import TrialSpec
from regzoo.studies.trial.train import train_eval, train_run
from regzoo.zoo import load_model

CONFIGS = {
    "default": REPO / "studies" / "configs" / "default.yaml",
    "fnn-mnist1d": REPO / "studies" / "configs" / "fnn-mnist1d.yaml",
}
TARGET = 0.10  # the share of a trial's time the new metrics may cost


def measure(config: Path, seed: int, overrides: list[str]) -> dict[str, float]:
    """One run of `config`'s fixed values: its seconds, epochs, and the train_eval seconds."""
    with tempfile.TemporaryDirectory(prefix="regzoo-overfit-") as tmp:
        cfg = load_config(config, overrides=[f"runs_dir={tmp}", *overrides])
        spec = TrialSpec(cfg, {}, Path(tmp) / "run", seed, "train")
        with quiet_training():
            result = train_run(spec)
        assert result.checkpoint is not None, result.error
        _, data_kw, _ = split_params(cfg, {})
        dm = create_datamodule(cfg.data.name, seed=seed, **{"split_seed": cfg.seed, **data_kw})
        dm.setup("fit")
        model = load_model(result.checkpoint)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            train_eval(model, dm)
            times.append(time.perf_counter() - start)
    return {
        "run_s": result.seconds,
        "epochs": float(result.epochs),
        "train_eval_s": statistics.median(times),
    }


def measure_configs(names: list[str], seeds: int) -> dict[str, list[dict[str, float]]]:
    """`measure` of each named config over `seeds` seeds (tiny runs under REGZOO_BENCH_TINY)."""
    overrides = ["trainer.max_epochs=2", "trainer.limit_train_batches=2"] if TINY else []
    return {name: [measure(CONFIGS[name], s, overrides) for s in range(seeds)] for name in names}


def figures(*, quick: bool = False) -> list[Figure]:
    """`make bench`'s rows: each config's train_eval seconds against its run's, as a share."""
    names, seeds = (["default"], 1) if quick else (list(CONFIGS), 3)
    cmd = command("benchmarks.overfitting", f"--configs {' '.join(names)}", f"--seeds {seeds}")
    out = []
    for name, rows in measure_configs(names, seeds).items():
        ratios = [r["train_eval_s"] / r["run_s"] for r in rows]
        share = statistics.median(ratios)
        out.append(
            Figure(
                "overfitting",
                f"`{name}`: train_eval from the kept checkpoint vs the whole run "
                f"({statistics.median(r['epochs'] for r in rows):.0f} epochs, {seeds} seed(s); "
                f"share {min(ratios):.2%}-{max(ratios):.2%})",
                fmt(statistics.median(r["train_eval_s"] for r in rows), "s"),
                fmt(statistics.median(r["run_s"] for r in rows), "s"),
                share,
                f"≤ {TARGET:.2f}×",
                share <= TARGET,
                cmd,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {command('benchmarks.overfitting', *_args(args))}")
    for name, rows in measure_configs(args.configs, args.seeds).items():
        ratios = [r["train_eval_s"] / r["run_s"] for r in rows]
        print(
            f"{name}: train_eval {statistics.median(r['train_eval_s'] for r in rows):.3f} s, "
            f"run {statistics.median(r['run_s'] for r in rows):.1f} s "
            f"({statistics.median(r['epochs'] for r in rows):.0f} epochs); "
            f"ratio median {statistics.median(ratios):.2%} "
            f"(range {min(ratios):.2%}-{max(ratios):.2%}, {len(rows)} seeds; "
            f"target <= {TARGET:.0%})"
        )


def _args(args: argparse.Namespace) -> list[str]:
    return [f"--configs {' '.join(args.configs)}", f"--seeds {args.seeds}"]


if __name__ == "__main__":
    main()
