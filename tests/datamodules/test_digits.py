from __future__ import annotations

import pytest
import torch

from regzoo.datamodules import create_datamodule
from regzoo.zoo import create_model


def test_digits_shapes_and_disjoint_splits() -> None:
    dm = create_datamodule("digits")
    assert dm.input_shape == (1, 8, 8)
    assert dm.num_classes == 10
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (64, 1, 8, 8)


def test_test_split_does_not_move_with_seed() -> None:
    a, b = create_datamodule("digits", seed=0), create_datamodule("digits", seed=1)
    assert torch.equal(a.splits["test"][0], b.splits["test"][0])
    assert not torch.equal(a.splits["val"][0], b.splits["val"][0])


def test_standardization_uses_training_statistics() -> None:
    dm = create_datamodule("digits", normalize="standard")
    assert float(dm.splits["train"][0].min()) == 0.0  # served raw: pixels in [0, 1]
    model = create_model("linear", input_shape=dm.input_shape, num_classes=10, normalize="standard")
    x_train = model.pipeline.load_statistics(dm.input_statistics()[1])(dm.splits["train"][0])
    assert abs(float(x_train.mean())) < 1e-4
    assert abs(float(x_train.std()) - 1) < 1e-2


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="batchsize"):
        create_datamodule("digits", batchsize=3)
