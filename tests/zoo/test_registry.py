"""The registry: the generic `Registry`, the model names, refusals with the allowed values, and
plain-typed hparams."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from regzoo._registry import Registry
from regzoo.zoo import (
    Classifier,
    create_model,
    list_models,
    load_model,
    model_hparams,
    register_model,
)
from tests.zoo.helpers import TRAIN_ONLY, learnable_data, loader, trainer

pytestmark = TRAIN_ONLY  # fits without validation data

# Every registered model with a `dropout` hparam: one rule for all of them.
WITH_DROPOUT = [name for name in list_models() if "dropout" in model_hparams(name)]
SHAPES = {"cnn": (1, 8, 8), "rnn": (1, 8, 8)}


class Base:
    def __init__(self, size: int, *, scale: float = 1.0, **rest: object) -> None:
        self.size, self.scale = size, scale


class Child(Base):
    def __init__(self, *, colour: str = "red", **base: object) -> None:
        super().__init__(**base)  # type: ignore[arg-type]
        self.colour = colour


@pytest.fixture
def shapes() -> Registry[Base]:
    registry: Registry[Base] = Registry("shape", option_noun="option", name_attribute="kind")
    registry.register("child")(Child)
    registry.register("base")(Base)
    return registry


def test_a_registry_lists_its_names_sorted_and_marks_each_class(shapes: Registry[Base]) -> None:
    assert shapes.names() == ["base", "child"]
    assert shapes.get("child") is Child and Child.kind == "child"  # type: ignore[attr-defined]


def test_a_registry_refuses_a_taken_name_and_keeps_the_first_class(
    shapes: Registry[Base],
) -> None:
    with pytest.raises(ValueError, match=r"shape name 'base' is already registered by .*Base"):
        shapes.register("base")(Child)
    assert shapes.get("base") is Base and shapes.names() == ["base", "child"]


@pytest.mark.parametrize("name", ["circle", None, ["base"]])
def test_a_registry_refuses_an_unknown_name_listing_the_known_ones(
    shapes: Registry[Base], name: object
) -> None:
    known = "available: base, child, or an import path package.module:Name$"
    with pytest.raises(ValueError, match=rf"unknown shape {re.escape(repr(name))}; {known}"):
        shapes.get(name)  # type: ignore[arg-type]


def test_a_registry_reads_every_keyword_along_the_class_chain(shapes: Registry[Base]) -> None:
    options = shapes.options("child")
    assert list(options) == ["size", "scale", "colour"]  # base first; **rest and **base skipped
    assert options["scale"].default == 1.0 and options["colour"].default == "red"
    assert list(shapes.options("base")) == ["size", "scale"]


def test_a_registry_builds_with_known_keywords_and_names_an_unknown_one(
    shapes: Registry[Base],
) -> None:
    built = shapes.create("child", size=3, colour="blue")
    assert isinstance(built, Child) and (built.size, built.scale, built.colour) == (3, 1.0, "blue")
    with pytest.raises(
        ValueError,
        match=r"^shape 'child' got unknown option\(s\) color, sise; accepted: colour, scale, size$",
    ):
        shapes.create("child", sise=3, color="blue")


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


def test_the_models_with_dropout_are_found_in_the_registry() -> None:
    assert {"fnn", "cnn", "rnn"} <= set(WITH_DROPOUT)


@pytest.mark.parametrize("name", WITH_DROPOUT)
@pytest.mark.parametrize("dropout", [True, False, -0.1, 1.0, float("nan"), "0.2", None])
def test_dropout_is_a_number_in_0_1_for_every_model(name: str, dropout: object) -> None:
    # A bool is an int to Python: cnn used to take `dropout=False` as 0.
    with pytest.raises(
        ValueError,
        match=rf"^dropout={re.escape(repr(dropout))} is invalid; allowed: a number in \[0, 1\)$",
    ):
        create_model(name, input_shape=SHAPES.get(name, (4,)), num_classes=2, dropout=dropout)


@pytest.mark.parametrize("name", WITH_DROPOUT)
@pytest.mark.parametrize("dropout", [0, 0.5])
def test_dropout_accepts_a_probability_for_every_model(name: str, dropout: float) -> None:
    model = create_model(name, input_shape=SHAPES.get(name, (4,)), num_classes=2, dropout=dropout)
    assert model.hparams["dropout"] == dropout
    if dropout:
        assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {dropout}


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
