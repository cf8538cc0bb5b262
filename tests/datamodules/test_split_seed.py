"""`split_seed`: which samples are validation (and which `train_size` keeps) is seeded apart from
`seed`, so a study's trials and retrainings are all validated on the same samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from regzoo.datamodules import ArrayDataModule, create_datamodule, list_datamodules
from regzoo.studies import ConfigError, StudyConfig, load_config
from regzoo.studies.trial.train import train_run
from tests.conftest import DEFAULT_CONFIG, spec_of

Make = Callable[..., ArrayDataModule]
SPLITS = ("train", "val", "test")


def shuffled(dm: ArrayDataModule) -> torch.Tensor:
    """One epoch's training inputs in the order the batches serve them."""
    return torch.cat([x for x, _ in dm.train_dataloader()])


@pytest.mark.parametrize("name", list_datamodules())
def test_the_same_split_seed_gives_the_same_data_and_splits_whatever_the_seed(
    make_dm: Make, name: str
) -> None:
    a = make_dm(name, seed=1, split_seed=7, train_size=20, batch_size=8)
    b = make_dm(name, seed=2, split_seed=7, train_size=20, batch_size=8)
    a.setup(), b.setup()
    for split in SPLITS:
        assert np.array_equal(a.split_indices[split], b.split_indices[split])
        assert torch.equal(a.splits[split][0], b.splits[split][0])  # generated data included
    assert not torch.equal(shuffled(a), shuffled(b))  # `seed` still orders the batches


def test_split_seed_none_follows_seed_and_another_split_seed_moves_the_validation_split() -> None:
    plain = create_datamodule("digits", seed=3, train_size=200)
    same = create_datamodule("digits", seed=5, split_seed=3, train_size=200)
    other = create_datamodule("digits", seed=3, split_seed=4, train_size=200)
    for dm in (plain, same, other):
        dm.setup()
    for split in SPLITS:
        assert np.array_equal(plain.split_indices[split], same.split_indices[split])
    assert not np.array_equal(plain.split_indices["val"], other.split_indices["val"])
    assert not np.array_equal(plain.split_indices["train"], other.split_indices["train"])
    assert np.array_equal(plain.split_indices["test"], other.split_indices["test"])  # fixed


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, True, "3"])
def test_a_bad_split_seed_is_one_value_error_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"split_seed=.* is invalid; allowed: an integer in \[0"):
        create_datamodule("digits", split_seed=bad)


def test_a_study_config_may_set_split_seed_and_a_bad_one_is_a_config_error() -> None:
    assert load_config(DEFAULT_CONFIG, overrides=["data.split_seed=5"]).data.options == {
        **load_config(DEFAULT_CONFIG).data.options,
        "split_seed": 5,
    }
    with pytest.raises(ConfigError, match=r"data: split_seed=-1 is invalid"):
        load_config(DEFAULT_CONFIG, overrides=["data.split_seed=-1"])


class SplitRecorder(L.Callback):
    """What a run trained and validated on: its datamodule's seed and split indices."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        self.seed = dm.seed
        self.splits = {k: v.copy() for k, v in dm.split_indices.items()}


def test_every_seed_of_a_study_is_validated_on_the_same_split(in_tmp: Path) -> None:
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    tiny += ["trainer.accelerator=cpu", "model.channels=[4, 8]", "model.hidden=[16]", "seed=11"]
    cfg = load_config(DEFAULT_CONFIG, overrides=tiny)

    def run(name: str, seed: int, cfg: StudyConfig = cfg) -> SplitRecorder:
        recorder = SplitRecorder()
        train_run(spec_of(cfg, in_tmp / name, seed=seed), callbacks=[recorder])
        return recorder

    one, two = run("one", 1), run("two", 2)
    assert (one.seed, two.seed) == (1, 2)
    for split in SPLITS:
        assert np.array_equal(one.splits[split], two.splits[split])
    study_split = create_datamodule("digits", seed=0, split_seed=11)  # the config's seed
    study_split.setup()
    assert np.array_equal(one.splits["val"], study_split.split_indices["val"])
    # A split_seed among the config's data options wins over the config's seed.
    own = run("own", 1, load_config(DEFAULT_CONFIG, overrides=[*tiny, "data.split_seed=12"]))
    assert not np.array_equal(own.splits["val"], one.splits["val"])


def test_member_batches_are_each_seeds_own_batches_epoch_after_epoch(make_dm: Make) -> None:
    """A population's members each keep the batch order their own seed gives a single trial
    (`member_train_dataloader`), over several epochs of one loader, the short last batch too."""
    seeds = [3, 5, 3]
    dm = make_dm("glyph", seed=0, split_seed=7, train_size=20, batch_size=8)
    dm.setup()
    loader = dm.member_train_dataloader(seeds)
    together = [batch for _ in range(3) for batch in loader]  # three epochs
    for k, seed in enumerate(seeds):
        alone = make_dm("glyph", seed=seed, split_seed=7, train_size=20, batch_size=8)
        alone.setup()
        single = alone.train_dataloader()
        expected = [batch for _ in range(3) for batch in single]
        assert len(together) == len(expected) == 9
        for (x, y), (x1, y1) in zip(together, expected, strict=True):
            assert torch.equal(x[k], x1) and torch.equal(y[k], y1)
    assert not torch.equal(together[0][0][0], together[0][0][1])  # seeds 3 and 5 differ


def test_member_batches_refuse_the_albumentations_backend(make_dm: Make) -> None:
    dm = make_dm(
        "digits", seed=0, augment={"noise": 0.1}, augment_backend="albumentations", batch_size=8
    )
    dm.setup()
    with pytest.raises(ValueError, match=r"augment_backend='albumentations'.*allowed"):
        dm.member_train_dataloader([0, 1])
