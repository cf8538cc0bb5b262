"""Epoch-level metrics: the logged loss and accuracy are those of the whole split, whatever the
batch sizes, each epoch's alone, and a diverged model's NaN reaches the logs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from regzoo.zoo import create_model
from tests.zoo.helpers import TRAIN_ONLY, learnable_data, loader, trainer

pytestmark = TRAIN_ONLY  # fits without validation data

SHAPE = (1, 6, 6)


def small_cnn() -> torch.nn.Module:
    return create_model("cnn", input_shape=SHAPE, num_classes=3, channels=(4,), hidden=(8,))


def test_validation_loss_and_accuracy_are_the_whole_splits_with_a_short_last_batch() -> None:
    x, y = learnable_data(SHAPE, n=40)  # batches of 16, 16 and 8: unequal weights
    model = small_cnn()
    fit = trainer(max_epochs=2)
    fit.fit(model, loader(x, y), loader(x, y))
    model.eval()
    with torch.no_grad():
        logits = model(x)  # (40, 3)
    logged = fit.callback_metrics
    assert math.isclose(float(logged["val/loss"]), float(F.cross_entropy(logits, y)), rel_tol=1e-5)
    assert float(logged["val/acc"]) == float((logits.argmax(1) == y).float().mean())
    (tested,) = fit.test(model, loader(x, y), verbose=False)
    assert math.isclose(tested["test/loss"], float(logged["val/loss"]), rel_tol=1e-5)


class BatchLosses(L.Callback):
    """Each training batch's loss and size, by epoch."""

    def __init__(self) -> None:
        self.seen: dict[int, list[tuple[float, int]]] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        entry = (float(outputs["loss"]), len(batch[1]))
        self.seen.setdefault(trainer.current_epoch, []).append(entry)


def test_training_metrics_are_each_epochs_own_sample_weighted_mean(tmp_path: Path) -> None:
    x, y = learnable_data(SHAPE, n=40)
    losses = BatchLosses()
    fit = trainer(max_epochs=3, logger=CSVLogger(tmp_path, name="", version=""), callbacks=[losses])
    fit.fit(small_cnn(), loader(x, y))
    with (tmp_path / "metrics.csv").open() as f:
        logged = {int(r["epoch"]): float(r["train/loss"]) for r in csv.DictReader(f)}
    assert sorted(logged) == [0, 1, 2]
    for epoch, seen in losses.seen.items():
        expected = sum(loss * n for loss, n in seen) / sum(n for _, n in seen)
        assert math.isclose(logged[epoch], expected, rel_tol=1e-5)
    assert "val/loss" not in fit.callback_metrics  # no validation batches, nothing logged


def test_a_nan_loss_is_logged_as_nan() -> None:
    x, y = learnable_data(SHAPE, n=32)
    model = small_cnn()
    with torch.no_grad():
        next(model.parameters()).fill_(math.nan)
    fit = trainer(max_epochs=1, limit_train_batches=1)
    fit.fit(model, loader(x, y), loader(x, y))
    assert math.isnan(float(fit.callback_metrics["val/loss"]))
