"""Started by torchrun from test_ddp: a DDP study whose every rank writes down what it trained.

    python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        -m tests.studies._ddp_probe CONFIG STORAGE OUT_DIR [--fail=RANK:TRIAL:EPOCH] [KEY=VALUE ...]

Rank r appends one JSON line per trial it trained to the end to OUT_DIR/rank<r>.jsonl: the
trial's folder name, the model's sampled hyperparameters, the epochs it trained and the epoch at
which pruning stopped it. `--fail=1:trial-0:1` makes rank 1 alone raise a (fake) CUDA
out-of-memory error at the first batch of epoch 1 of trial 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L

from regzoo.studies import load_config
from regzoo.studies.scaling.ddp import run_rank
from regzoo.studies.scaling.options import RunOptions
from regzoo.studies.trial.callbacks import LifecycleCallback

SEARCHED = ("lr", "dropout", "optimizer", "weight_decay")


def _trial(trainer: L.Trainer) -> str:
    """`trial-<n>`: the run's folder is named after the trial on every rank."""
    return Path(trainer.default_root_dir).name


class Probe(L.Callback):
    """Record, on this rank, what the trial trained with and when it stopped."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        life = next(c for c in trainer.callbacks if isinstance(c, LifecycleCallback)).life
        record = {
            "rank": trainer.global_rank,
            "trial": _trial(trainer),
            "world_size": trainer.world_size,
            "hparams": {k: pl_module.hparams[k] for k in SEARCHED},
            "epochs": trainer.current_epoch,
            "pruned_at": life.pruned_epoch,
        }
        with (self.out / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


class FailOnRank(L.Callback):
    """Raise on one rank only, at the first batch of one epoch of one trial: a rank's own OOM."""

    def __init__(self, rank: int, trial: str, epoch: int) -> None:
        self.rank, self.trial, self.epoch = rank, trial, epoch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.global_rank, _trial(trainer), trainer.current_epoch, batch_idx) == (
            self.rank,
            self.trial,
            self.epoch,
            0,
        ):
            raise RuntimeError(f"CUDA out of memory (injected on rank {self.rank})")


def main(argv: list[str]) -> None:
    config, storage, out, *rest = argv
    callbacks: list[L.Callback] = [Probe(Path(out))]
    overrides = []
    for arg in rest:
        if arg.startswith("--fail="):
            rank, trial, epoch = arg.removeprefix("--fail=").split(":")
            callbacks.append(FailOnRank(int(rank), trial, int(epoch)))
        else:
            overrides.append(arg)
    cfg = load_config(config, overrides=overrides)
    opts = RunOptions(config=config, storage=storage, wandb="disabled", progress=False)
    run_rank(cfg, opts, summary=False, callbacks=callbacks)


if __name__ == "__main__":
    main(sys.argv[1:])
