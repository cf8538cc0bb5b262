"""Helpers for the zoo tests: tiny learnable data sets and real, silent Lightning trainers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

# The input kinds of docs/design.md, small enough for seconds-long fits.
KINDS: dict[str, tuple[int, ...]] = {"image": (2, 8, 8), "signal": (2, 12), "vector": (5,)}
# Per docs/design.md: cnn and rnn need a spatial or step axis; everything else flattens anything.
REFUSES: dict[str, set[str]] = {"cnn": {"vector"}, "rnn": {"vector"}}
# Small versions of each model that still switch on its optional layers.
SMALL: dict[str, dict[str, Any]] = {
    "linear": {},
    "fnn": {"hidden": (16, 8), "batchnorm": True, "dropout": 0.1},
    "cnn": {"channels": (4, 8), "hidden": (16,), "batchnorm": True, "dropout": 0.1},
    "rnn": {"hidden_size": 8, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
}
NUM_CLASSES = 3
# For test modules that fit without validation data on purpose: Lightning notes that every
# Classifier's `validation_step` then goes unused.
TRAIN_ONLY = pytest.mark.filterwarnings(
    "ignore:You defined a `validation_step` but have no `val_dataloader`"
    ":lightning.fabric.utilities.warnings.PossibleUserWarning"
)


def learnable_data(
    shape: Sequence[int], n: int = 48, num_classes: int = NUM_CLASSES, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by a fixed random linear map, so every model can fit them."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)  # (n, *shape)
    w = torch.randn(x[0].numel(), num_classes, generator=gen)  # (D, K)
    y = (x.flatten(1) @ w).argmax(dim=1)  # (n, D) @ (D, K) -> (n,)
    return x, y


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 16) -> DataLoader:
    """Fixed batch order (no shuffling): two runs see the same batches."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(max_epochs: int = 1, **kwargs: Any) -> L.Trainer:
    """A real, silent CPU Trainer; `kwargs` override the defaults."""
    defaults: dict[str, Any] = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,  # the tests' few batches per epoch, logged or not
    }
    return L.Trainer(**{**defaults, **kwargs})


@torch.no_grad()
def mean_loss(model: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy on the whole set, in eval mode (no dropout, running batch-norm stats)."""
    was_training = model.training
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(x), y).item()
    model.train(was_training)
    return loss


@torch.no_grad()
def accuracy(model: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


class LearningRates(Callback):
    """The first group's learning rate at the start of every epoch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


class Trajectory(Callback):
    """A copy of every parameter after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self.steps.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


@pytest.fixture
def own_rng_one_thread() -> Iterator[None]:
    """Seeds set in a test do not leak into others; one thread, as the population tests'
    tensors are tiny (two threads made each step 10-30 times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            yield
    finally:
        torch.set_num_threads(threads)
