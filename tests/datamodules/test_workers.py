"""albumentations in DataLoader workers: each worker draws its own augmentations."""

from __future__ import annotations

import numpy as np
import torch

from regzoo.datamodules import ArrayDataModule, Arrays


class Identical(ArrayDataModule):
    """Every sample the same image, so any difference between batches is the augmentation."""

    def load(self) -> Arrays:
        x = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32).reshape(1, 1, 8, 8), (64, 1, 1, 1))
        return Arrays(x=x, y=np.arange(64) % 2)


def test_two_workers_do_not_repeat_each_other() -> None:
    dm = Identical(
        batch_size=8,
        num_workers=2,
        augment={"shift": 0.2, "noise": 0.1},
        augment_backend="albumentations",
    )
    batches = [x for x, _ in dm.train_dataloader()]  # batch i comes from worker i % 2
    assert len(batches) >= 4
    for first, second in ((batches[0], batches[1]), (batches[2], batches[3])):
        assert not torch.allclose(first, second)
    assert not torch.allclose(batches[0], batches[2])  # a worker moves on between its batches
    assert not torch.allclose(batches[0][0], batches[0][1])  # and between samples
