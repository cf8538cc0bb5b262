"""The registry: names, refusals with the allowed values, and plain-typed hparams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.zoo.helpers import learnable_data, loader, trainer
from zoo import Classifier, create_model, list_models, load_model, model_hparams, register_model


def test_the_course_models_are_registered() -> None:
    assert {"linear", "fnn", "cnn", "rnn"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_a_duplicate_name_is_refused_and_the_first_model_kept() -> None:
    before = model_hparams("fnn")
    with pytest.raises(ValueError, match="'fnn' is already registered"):

        @register_model("fnn")
        class Impostor(Classifier):
            pass

    assert model_hparams("fnn") == before
    assert type(create_model("fnn", input_shape=(4,), num_classes=2)).__name__ == "FNN"


def test_an_unknown_name_lists_every_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'mlp'") as err:
        create_model("mlp", input_shape=(4,), num_classes=2)
    assert all(name in str(err.value) for name in list_models())


@pytest.mark.parametrize("name", list_models())
def test_an_unknown_hparam_lists_the_accepted_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) hiden") as err:
        create_model(name, input_shape=(1, 8, 8), num_classes=2, hiden=(4,))
    for accepted in model_hparams(name):
        assert accepted in str(err.value)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("fnn", "hidden", (8, 0)),
        ("fnn", "activation", "swish"),
        ("fnn", "dropout", 1.0),
        ("fnn", "bias", "no"),
        ("rnn", "cell", "transformer"),
        ("rnn", "hidden_size", 0),
        ("rnn", "num_layers", 1.5),
        ("rnn", "bidirectional", 1),
        ("rnn", "dropout", -0.1),
        ("linear", "optimizer", "adagrad"),
        ("linear", "scheduler", "cyclic"),
        ("linear", "alpha", 1.0),
        ("linear", "num_classes", 1),
        ("linear", "input_shape", (1, 2, 3, 4)),
        ("linear", "lr", float("nan")),
    ],
)
def test_a_bad_value_names_the_argument_and_what_is_allowed(
    name: str, key: str, value: object
) -> None:
    hparams: dict[str, object] = {"input_shape": (1, 8, 8), "num_classes": 3, key: value}
    with pytest.raises(ValueError, match=rf"{key}=.* is invalid.*(allowed|expected)"):
        create_model(name, **hparams)


def test_numpy_and_torch_values_become_plain_python() -> None:
    model = create_model(
        "fnn",
        input_shape=torch.Size([1, 8, 8]),
        num_classes=np.int64(10),
        hidden=np.array([16, 8]),
        lr=np.float32(0.01),
        batchnorm=np.bool_(True),
    )
    hp = dict(model.hparams)
    assert hp["input_shape"] == (1, 8, 8) and type(hp["input_shape"]) is tuple
    assert type(hp["num_classes"]) is int and type(hp["lr"]) is float
    assert hp["hidden"] == (16, 8) and all(type(h) is int for h in hp["hidden"])
    assert hp["batchnorm"] is True


def test_a_value_a_checkpoint_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"activation=.* is invalid; allowed: None, bool"):
        create_model("fnn", input_shape=(4,), num_classes=2, activation=torch.nn.ReLU)


def test_a_model_built_from_numpy_values_reloads_with_weights_only(tmp_path: Path) -> None:
    x, y = learnable_data((1, 8, 8), n=16)
    model = create_model(
        "cnn", input_shape=np.array([1, 8, 8]), num_classes=np.int64(3), lr=np.float64(1e-2)
    )
    fit = trainer(limit_train_batches=1)
    fit.fit(model, loader(x, y))
    fit.save_checkpoint(tmp_path / "model.ckpt")
    torch.load(tmp_path / "model.ckpt", weights_only=True)  # numpy scalars would make it refuse
    rebuilt = load_model(tmp_path / "model.ckpt")
    assert torch.equal(rebuilt(x), model.eval()(x))
