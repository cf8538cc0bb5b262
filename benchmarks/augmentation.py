"""What augmentation costs a training epoch: the default CNN on `digits`, unaugmented vs all five
transforms, with the `device` backend (batched tensor ops) and the `albumentations` backend (per
sample, in the DataLoader).

    .venv/bin/python -m benchmarks.augmentation [--repeats 5] [--epochs 3] [--threads N] [--profile]

Each configuration trains with a real Trainer (no validation, so only the training loop is
timed); configurations alternate within each repeat so that drifting machine load hits them
alike, and every epoch after a warm-up fit is one sample. The table gives the median wall time
and the median CPU time of this process per epoch, each with its ratio to unaugmented.
Target: `device` at most 1.25× unaugmented.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import lightning as L
import torch

from regzoo.datamodules import create_datamodule
from regzoo.zoo import create_model

AUGMENT = {"rotation": 15, "flip": "horizontal", "zoom": 0.1, "shift": 0.1, "noise": 0.05, "p": 1.0}
CONFIGS: dict[str, dict[str, Any]] = {
    "unaugmented": {},
    "device": {"augment": AUGMENT, "augment_backend": "device"},
    "albumentations": {"augment": AUGMENT, "augment_backend": "albumentations"},
}
TARGET = 1.25


class EpochTimer(L.Callback):
    """Wall time and this process's CPU time of each training epoch (the training loop only)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wall, cpu = self._start
        self.times.append((time.perf_counter() - wall, time.process_time() - cpu))


def epoch_times(
    config: dict[str, Any], *, epochs: int, profiler: Any = None
) -> list[tuple[float, float]]:
    """Train the default CNN on digits for `epochs` epochs; (wall, CPU) seconds per epoch."""
    L.seed_everything(0, verbose=False)
    dm = create_datamodule("digits", batch_size=64, normalize="standard", **config)
    dm.setup()  # loading and splitting are not part of an epoch
    model = create_model(
        "cnn",
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        normalize=dm.normalize,
        channels=(16, 32),
        hidden=(64,),
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        profiler=profiler,
    )
    trainer.fit(model, dm)
    return timer.times


def measure_augmentation(*, repeats: int = 5, epochs: int = 3) -> dict[str, Any]:
    """Median wall and CPU seconds per training epoch for each configuration, and their ratios
    to unaugmented. CPU time (of this process: the DataLoader runs in it) hardly moves with
    other processes' load, so on a shared machine it is the steadier figure."""
    for config in CONFIGS.values():  # warm-up: imports, kernels, allocator
        epoch_times(config, epochs=1)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for _ in range(repeats):
        for name, config in CONFIGS.items():
            samples[name].extend(epoch_times(config, epochs=epochs))
    result: dict[str, Any] = {"epochs": {name: len(times) for name, times in samples.items()}}
    for i, clock in enumerate(("wall", "cpu")):
        median = {name: statistics.median(t[i] for t in times) for name, times in samples.items()}
        result[f"{clock}_seconds_per_epoch"] = median
        result[f"{clock}_ratio"] = {name: median[name] / median["unaugmented"] for name in CONFIGS}
    result["augment"] = AUGMENT
    result["machine"] = machine()
    return result


def machine() -> str:
    return (
        f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}"
    )


def table(result: dict[str, Any]) -> str:
    lines = [
        "| configuration | wall s / epoch | × unaugmented | CPU s / epoch | × unaugmented |",
        "|---|---|---|---|---|",
    ]
    for name, wall in result["wall_seconds_per_epoch"].items():
        cpu = result["cpu_seconds_per_epoch"][name]
        lines.append(
            f"| {name} | {wall:.3f} | {result['wall_ratio'][name]:.2f} "
            f"| {cpu:.3f} | {result['cpu_ratio'][name]:.2f} |"
        )
    return "\n".join(lines)


def profile_device_epoch() -> None:
    """torch.profiler over one augmented `device` epoch: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    epoch_times(CONFIGS["device"], epochs=1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        epoch_times(CONFIGS["device"], epochs=1)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per fit")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile one device epoch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile_device_epoch()
        return
    result = measure_augmentation(repeats=args.repeats, epochs=args.epochs)
    print(f"digits, cnn channels=(16, 32) hidden=(64,), batch 64; augment={AUGMENT}")
    print(
        f"{result['epochs']['unaugmented']} epochs per configuration (medians); {result['machine']}"
    )
    print(table(result))
    for clock in ("wall", "cpu"):
        verdict = "met" if result[f"{clock}_ratio"]["device"] <= TARGET else "MISSED"
        print(f"target device <= {TARGET}x unaugmented ({clock} time): {verdict}")


if __name__ == "__main__":
    main()
