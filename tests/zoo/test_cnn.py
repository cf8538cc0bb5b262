from __future__ import annotations

import pytest
import torch

from regzoo.zoo import create_model, list_models


def test_cnn_is_registered() -> None:
    assert "cnn" in list_models()


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 40), (2, 7)])
def test_cnn_outputs_logits_for_images_and_signals(shape: tuple[int, ...]) -> None:
    model = create_model("cnn", input_shape=shape, num_classes=5, channels=(4, 8), hidden=(16,))
    assert model(torch.randn(3, *shape)).shape == (3, 5)


def test_cnn_refuses_feature_vectors() -> None:
    with pytest.raises(ValueError, match="cnn needs an image"):
        create_model("cnn", input_shape=(10,), num_classes=2)


def test_unknown_hparam_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) chanels.*channels"):
        create_model("cnn", input_shape=(1, 8, 8), num_classes=10, chanels=(4,))


@pytest.mark.parametrize(
    ("key", "value"),
    [("optimizer", "adagrad"), ("lr", -1.0), ("dropout", 1.0), ("init", "orthogonal")],
)
def test_bad_values_name_the_argument(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        create_model("cnn", input_shape=(1, 8, 8), num_classes=10, **{key: value})
