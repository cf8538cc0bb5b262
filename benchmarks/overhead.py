"""Framework overhead: an epoch of the default study's CNN on `digits` through regzoo (the
`Classifier`, the datamodule, a Lightning Trainer) against a hand-written PyTorch loop over the
same tensors, the same network and the same optimizer.

    .venv/bin/python -m benchmarks.overhead [--repeats 6] [--epochs 4] [--profile | --breakdown]

An epoch is the training batches and one pass over the validation split, with the training
loss and accuracy accumulated, as both sides do in a study. Each fit's first epoch is a warm-up
and left out; the two sides alternate (ABBA) within the process and the medians per epoch are
compared, in wall time and in this process's CPU time (steadier on a shared machine). Two more
sides: regzoo as a study trial trains (CSV logger, best-epoch checkpoint, early stopping), and
the bare network in a LightningModule with no metrics or logging (Lightning's own loop).
Target: regzoo at most 1.10x the hand-written loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from benchmarks._common import TINY, Figure, alternate, command, fmt, median
from regzoo.datamodules import create_datamodule
from regzoo.datamodules.base import ArrayDataModule
from regzoo.zoo import Classifier, create_model
from regzoo.zoo.cnn import CNN

TARGET = 1.10
BATCH_SIZE = 64
MODEL: dict[str, Any] = {"channels": (16, 32), "hidden": (64,)}  # the default study's cnn
Clock = tuple[float, float]  # (wall, CPU) seconds


def clocks() -> Clock:
    return time.perf_counter(), time.process_time()


def since(start: Clock) -> Clock:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


class EpochTimer(L.Callback):
    """Wall and CPU time of each epoch: training batches and the validation pass that Lightning
    runs before `on_train_epoch_end`."""

    def __init__(self) -> None:
        self.times: list[Clock] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = clocks()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize()
        self.times.append(since(self._start))


def setup(
    make_dm: Callable[[], ArrayDataModule] | None = None,
) -> tuple[ArrayDataModule, Classifier]:
    """The default study's datamodule (or `make_dm()`'s) and model (its fixed values, the
    search's defaults)."""
    L.seed_everything(0, verbose=False)
    dm = (
        make_dm()
        if make_dm
        else create_datamodule("digits", batch_size=BATCH_SIZE, normalize="standard")
    )
    dm.setup()  # loading and splitting are not part of an epoch
    model = create_model(
        "cnn",
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        normalize=dm.normalize,
        **MODEL,
    )
    model.pipeline.load_statistics(dm.input_statistics()[1])  # the bare and hand sides' too
    return dm, model


def network(model: Classifier) -> torch.nn.Module:
    """What a hand-written loop runs: the model's normalization, then its network (the data are
    served raw, as regzoo serves them)."""
    return torch.nn.Sequential(model.pipeline, model.net)


def synchronize() -> None:
    """Wait for the GPU, so that an epoch's time includes its kernels."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class BareModule(L.LightningModule):
    """The network in the least a LightningModule needs (no metrics, no logging): what
    Lightning's loop costs by itself."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=1e-3)


def regzoo_epochs(
    epochs: int,
    *,
    study: bool = False,
    bare: bool = False,
    validate: bool = True,
    make_dm: Callable[[], ArrayDataModule] | None = None,
    make_model: Callable[[ArrayDataModule], Classifier] | None = None,
    profiler: Any = None,
) -> list[Clock]:
    """Fit for 1 + `epochs` epochs through regzoo (with `bare`, the network in a bare
    LightningModule; without `validate`, training batches only); the times of all but the
    first."""
    dm, classifier = setup(make_dm)
    classifier = make_model(dm) if make_model else classifier
    model: L.LightningModule = BareModule(network(classifier)) if bare else classifier
    timer = EpochTimer()
    callbacks: list[L.Callback] = [timer]
    with tempfile.TemporaryDirectory(prefix="regzoo-bench-") as tmp:
        extra: dict[str, Any] = {"logger": False, "enable_checkpointing": False}
        if study:  # what `studies.runner.train_run` adds around the same fit
            callbacks += [
                ModelCheckpoint(dirpath=tmp, filename="best", monitor="val/acc", mode="max"),
                EarlyStopping(monitor="val/loss", patience=epochs + 1, check_finite=True),
            ]
            extra = {"logger": CSVLogger(tmp, name="", version="")}
        trainer = L.Trainer(
            max_epochs=1 + epochs,
            accelerator="auto",
            devices=1,
            num_sanity_val_steps=0,
            limit_val_batches=None if validate else 0,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
            callbacks=callbacks,
            profiler=profiler,
            **extra,
        )
        trainer.fit(model, dm)
    return timer.times[1:]


def hand_epochs(
    epochs: int, *, validate: bool = True, make_dm: Callable[[], ArrayDataModule] | None = None
) -> list[Clock]:
    """The same 1 + `epochs` epochs as a hand-written loop; the times of all but the first."""
    dm, model = setup(make_dm)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = network(model).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)  # the Classifier's default
    x, y = dm.splits["train"]
    order = torch.Generator().manual_seed(0)
    times = []
    for _ in range(1 + epochs):
        start = clocks()
        net.train()
        sums = torch.zeros(2, device=device)  # loss, correct
        for idx in torch.randperm(len(y), generator=order).split(dm.batch_size):
            xb, yb = x[idx].to(device), y[idx].to(device)  # (B, *input_shape), (B,)
            logits = net(xb)  # (B, classes)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([loss.detach() * len(yb), (logits.argmax(1) == yb).sum()])
        metrics = [sums / len(y)]
        if validate:
            metrics.append(_evaluate(net, *dm.splits["val"], dm.batch_size, device))
        torch.cat(metrics).tolist()  # read once per epoch, as Lightning reads its epoch logs
        synchronize()
        times.append(since(start))
    return times[1:]


@torch.no_grad()
def _evaluate(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Loss and accuracy over a split, in batches: tensor (2,)."""
    net.eval()
    sums = torch.zeros(2, device=device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        xb, yb = xb.to(device), yb.to(device)
        logits = net(xb)  # (B, classes)
        loss = F.cross_entropy(logits, yb, reduction="sum")
        sums += torch.stack([loss, (logits.argmax(1) == yb).sum()])
    return sums / len(y)


def measure(*, repeats: int = 5, epochs: int = 3) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per epoch of each side."""
    regzoo_epochs(1)  # warm-up: imports, kernels, allocator
    hand_epochs(1)
    samples = alternate(
        {
            "hand-written": lambda: hand_epochs(epochs),
            "regzoo": lambda: regzoo_epochs(epochs),
            "regzoo, as a study trial": lambda: regzoo_epochs(epochs, study=True),
            "bare LightningModule": lambda: regzoo_epochs(epochs, bare=True),
        },
        repeats,
    )
    return {
        name: {
            "wall": median([t[0] for run in runs for t in run]),
            "cpu": median([t[1] for run in runs for t in run]),
        }
        for name, runs in samples.items()
    }


def figures(*, quick: bool = False) -> list[Figure]:
    repeats, epochs = (1, 1) if TINY else (2, 2) if quick else (12, 4)
    result = measure(repeats=repeats, epochs=epochs)
    hand = result["hand-written"]
    cmd = command("benchmarks.overhead", f"--repeats {repeats} --epochs {epochs}")
    rows = []
    for side in ("regzoo", "regzoo, as a study trial", "bare LightningModule"):
        for clock, label in (("wall", "wall"), ("cpu", "CPU")):
            ratio = result[side][clock] / hand[clock]
            plain = side == "regzoo"
            rows.append(
                Figure(
                    "overhead",
                    f"{side}: {label} s per digits epoch (train + val) vs hand-written loop",
                    fmt(result[side][clock], "s"),
                    fmt(hand[clock], "s"),
                    ratio,
                    f"≤ {TARGET:.2f}×" if plain else "-",
                    ratio <= TARGET if plain else None,
                    cmd,
                )
            )
    return rows


class _NoMetrics(CNN):
    """The Classifier without its metrics: loss only, nothing logged."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        F.cross_entropy(self(x), y)

    def on_train_epoch_end(self) -> None: ...

    def on_validation_epoch_end(self) -> None: ...


class _OneGroup(_NoMetrics):
    """... and one optimizer parameter group instead of decayed and undecayed weights."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _NoHooks(_OneGroup):
    """... and none of the Classifier's per-step hooks (Lightning skips hooks not overridden)."""

    on_before_optimizer_step = L.LightningModule.on_before_optimizer_step
    configure_gradient_clipping = L.LightningModule.configure_gradient_clipping


def breakdown(*, repeats: int = 6, epochs: int = 4) -> None:
    """Take the Classifier's parts away one at a time, down to a bare LightningModule: what
    each costs per epoch, all sides alternating in this process."""

    def fit(cls: type[Classifier] | None = None, bare: bool = False) -> Callable[[], list[Clock]]:
        def make_model(dm: ArrayDataModule) -> Classifier:
            L.seed_everything(0, verbose=False)
            assert cls is not None
            return cls(
                input_shape=dm.input_shape,
                num_classes=dm.num_classes,
                **MODEL,
            )

        return lambda: regzoo_epochs(epochs, bare=bare, make_model=make_model if cls else None)

    runs = {
        "hand-written": lambda: hand_epochs(epochs),
        "regzoo": fit(),
        "- torchmetrics": fit(_NoMetrics),
        "- 2nd param group": fit(_OneGroup),
        "- hook overrides": fit(_NoHooks),
        "bare LightningModule": fit(bare=True),
    }
    for run in runs.values():  # warm-up
        run()
    samples = alternate(runs, repeats)
    hand = median([t[0] for run in samples["hand-written"] for t in run])
    print(f"{'side':<22} {'wall ms':>8} {'× hand':>7}")
    for name, runs_ in samples.items():
        wall = median([t[0] for run in runs_ for t in run])
        print(f"{name:<22} {1e3 * wall:8.1f} {wall / hand:7.2f}")


def profile(epochs: int = 5) -> None:
    """cProfile over a regzoo fit: own time grouped by package, then the top functions."""
    import cProfile
    import pstats

    regzoo_epochs(1)
    prof = cProfile.Profile()
    prof.enable()
    regzoo_epochs(epochs)
    prof.disable()
    stats = pstats.Stats(prof)
    by_package: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(path)] = by_package.get(_package(path), 0.0) + own
    total = sum(by_package.values())
    print(f"own time by package over {epochs + 1} epochs ({total:.2f} s):")
    for name, own in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14} {own:7.3f} s  {100 * own / total:5.1f}%")
    stats.sort_stats("tottime").print_stats(30)


def _package(path: str) -> str:
    parts = Path(path).parts
    for name in ("lightning", "lightning_utilities", "torchmetrics", "torch", "zoo", "datamodules"):
        if name in parts:
            return name.split("_")[0]
    return "builtin" if path.startswith("~") else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per fit")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="cProfile a regzoo fit instead")
    parser.add_argument("--breakdown", action="store_true", help="what each part costs instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile()
        return
    if args.breakdown:
        breakdown(repeats=args.repeats, epochs=args.epochs)
        return
    result = measure(repeats=args.repeats, epochs=args.epochs)
    hand = result["hand-written"]
    print(f"{'side':<26} {'wall s':>8} {'ratio':>6} {'CPU s':>8} {'ratio':>6}")
    for name, t in result.items():
        print(
            f"{name:<26} {t['wall']:8.4f} {t['wall'] / hand['wall']:6.2f} "
            f"{t['cpu']:8.4f} {t['cpu'] / hand['cpu']:6.2f}"
        )


if __name__ == "__main__":
    main()
