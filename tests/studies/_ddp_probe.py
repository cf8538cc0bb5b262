"""Started by torchrun from test_ddp: a DDP study whose every rank writes down what it trained.

    python -m torch.distributed.run --standalone --nproc-per-node 2 \\
        -m tests.studies._ddp_probe CONFIG STORAGE OUT_DIR [KEY=VALUE ...]

Rank r appends one JSON line per trial to OUT_DIR/rank<r>.jsonl: the model's sampled
hyperparameters, the epochs it trained and the epoch at which pruning stopped it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from studies._callbacks import OptunaPruning
from studies.config import load_config
from studies.ddp import run_rank

SEARCHED = ("lr", "dropout", "optimizer", "weight_decay")


class Probe(L.Callback):
    """Record, on this rank, what the trial trained with and when it stopped."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pruning = next(c for c in trainer.callbacks if isinstance(c, OptunaPruning))
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "hparams": {k: pl_module.hparams[k] for k in SEARCHED},
            "epochs": trainer.current_epoch,
            "pruned_at": pruning.pruned_at,
        }
        with (self.out / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> None:
    config, storage, out, *overrides = argv
    cfg = load_config(config, overrides=overrides)
    run_rank(cfg, storage=storage, wandb="disabled", summary=False, callbacks=[Probe(Path(out))])


if __name__ == "__main__":
    main(sys.argv[1:])
