"""Bad arguments from Python: `create_model` and `create_datamodule` raise one ValueError that
names the argument, for any malformed value hypothesis generates (wrong types, NaN and
infinities, out-of-range and huge numbers, unicode strings) — never another exception.

Each generated value is invalid by the documented contract of its argument; the tally counts
the cases that ran.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regzoo.datamodules import create_datamodule, datamodule_options, list_datamodules
from regzoo.zoo import create_model, list_models, model_hparams
from regzoo.zoo._layers import ACTIVATIONS, INITS
from regzoo.zoo.classifier import OPTIMIZERS, SCHEDULERS
from regzoo.zoo.rnn import CELLS
from tests.reliability.conftest import Tally

HUGE = st.sampled_from([10**12, 2**63, 10**30, 10**100])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
TEXT = st.text(min_size=1, max_size=12)  # unicode: hypothesis draws from all of it
OTHER = st.one_of(st.none(), st.dictionaries(TEXT, st.integers(), max_size=2), st.just(object()))


def a_word_not_in(allowed: Any) -> st.SearchStrategy[Any]:
    return st.one_of(TEXT.filter(lambda s: s not in allowed), st.integers(), st.lists(TEXT), OTHER)


def not_a_number() -> st.SearchStrategy[Any]:
    return st.one_of(TEXT, st.lists(st.floats(), min_size=1, max_size=2), OTHER, NON_FINITE)


def bad_float(low: float | None, high: float | None = None) -> st.SearchStrategy[Any]:
    """Values outside [low, high) (None: unbounded), or not a finite number."""
    outside = []
    if low is not None:
        outside.append(
            st.floats(max_value=low, exclude_max=True, allow_nan=False).filter(
                lambda x: x < low and math.isfinite(x)
            )
        )
    if high is not None:
        outside.append(st.floats(min_value=high, allow_infinity=False))
    return st.one_of(not_a_number(), *outside)


def bad_int(low: int, *, size: bool = False) -> st.SearchStrategy[Any]:
    """Integers below `low`, fractions, not numbers; huge ones where it is a size."""
    options = [
        not_a_number(),
        st.integers(max_value=low - 1),
        st.floats(0.1, 1e6).filter(lambda x: x != int(x)),
    ]
    return st.one_of(*options, HUGE) if size else st.one_of(*options)


def bad_sizes(*, empty_ok: bool) -> st.SearchStrategy[Any]:
    """Layer widths: not a sequence, or a sequence holding a bad or huge width."""
    bad_width = st.one_of(st.integers(max_value=0), HUGE, NON_FINITE, TEXT, st.floats(0.1, 9.9))
    good = st.integers(1, 8)
    with_bad = st.tuples(st.lists(good, max_size=2), bad_width).map(lambda t: [*t[0], t[1]])
    scalars = st.one_of(st.integers(), NON_FINITE, OTHER)
    return st.one_of(with_bad, scalars, *([] if empty_ok else [st.just([])]))


def names(message: str, argument: str) -> bool:
    """The message names `argument` as a word (`lr`, not the `lr` inside `lr_values`)."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


BAD_FLAG = st.one_of(TEXT, st.integers().filter(lambda i: i not in (0, 1)), st.floats(), OTHER)

# hparam: malformed values (shared by every model that has it)
BAD_HPARAMS: dict[str, st.SearchStrategy[Any]] = {
    "input_shape": st.one_of(
        st.lists(st.integers(1, 8), min_size=4, max_size=5),
        st.tuples(st.integers(1, 4), st.one_of(st.integers(max_value=0), HUGE, TEXT)),
        st.integers(),
        OTHER,
    ),
    "num_classes": bad_int(2, size=True),
    "optimizer": a_word_not_in(OPTIMIZERS),
    "scheduler": a_word_not_in(SCHEDULERS),
    "init": a_word_not_in(INITS),
    "activation": a_word_not_in(ACTIVATIONS),
    "cell": a_word_not_in(CELLS),
    "lr": bad_float(0.0),
    "eps": bad_float(0.0),
    "gamma": bad_float(0.0),
    "temperature": bad_float(0.0),
    "init_std": bad_float(0.0),
    "init_range": bad_float(0.0),
    "momentum": bad_float(0.0, 1.0),
    "alpha": bad_float(0.0, 1.0),
    "dropout": bad_float(0.0, 1.0),
    "weight_decay": bad_float(0.0),
    "l1": bad_float(0.0),
    "l2": bad_float(0.0),
    "min_lr": bad_float(0.0),
    "grad_clip": bad_float(0.0),
    "init_value": not_a_number(),
    "betas": st.one_of(
        st.lists(st.floats(0, 0.9), min_size=3, max_size=4),
        st.tuples(st.floats(0, 0.9), st.one_of(NON_FINITE, st.floats(1.0, 9.0), TEXT)),
        st.floats(),
        OTHER,
    ),
    "step_size": bad_int(1),
    "plateau_patience": bad_int(0),
    "kernel_size": st.one_of(bad_int(1, size=True), st.integers(1, 50).map(lambda k: 2 * k)),
    "pool": bad_int(1),  # larger than the input: no pooling, as documented
    "hidden_size": bad_int(1, size=True),
    "num_layers": bad_int(1, size=True),
    "channels": bad_sizes(empty_ok=False),
    "hidden": bad_sizes(empty_ok=True),
    "decay_bias": BAD_FLAG,
    "batchnorm": BAD_FLAG,
    "bidirectional": BAD_FLAG,
    "bias": BAD_FLAG,
    "milestones": st.one_of(st.lists(st.integers(max_value=0), min_size=1), NON_FINITE, OTHER),
    "lr_values": st.one_of(st.lists(st.floats(max_value=0.0), min_size=2), NON_FINITE, OTHER),
    "normalize": a_word_not_in(("none", "minmax", "standard", "pca")),
    # three names for three classes: a wrong count, or not strings
    "class_names": st.one_of(
        st.lists(TEXT, min_size=1, max_size=2), st.lists(st.integers(), min_size=3, max_size=3)
    ),
    # four features for the (4,) inputs (images have none): a wrong count, or not strings
    "feature_names": st.one_of(
        st.lists(TEXT, min_size=5, max_size=6), st.lists(st.integers(), min_size=4, max_size=4)
    ),
    "input_range": st.one_of(
        st.tuples(st.floats(0, 1), st.floats(-2, -1)),
        st.tuples(NON_FINITE, st.floats(0, 1)),
        st.lists(st.floats(0, 1), min_size=3, max_size=4),
        TEXT,
    ),
}
SHAPES = {"cnn": (1, 8, 8), "rnn": (1, 8, 8), "fnn": (4,), "linear": (4,)}


def test_every_hparam_has_malformed_values() -> None:
    for name in list_models():
        assert set(model_hparams(name)) <= set(BAD_HPARAMS), name


@st.composite
def bad_model_call(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    model = draw(st.sampled_from(list_models()))
    hparam = draw(st.sampled_from(sorted(model_hparams(model))))
    kwargs: dict[str, Any] = {"input_shape": SHAPES[model], "num_classes": 3}
    if hparam in ("milestones", "lr_values"):  # read only by the piecewise schedule
        kwargs.update(scheduler="piecewise", milestones=(2,), lr_values=(0.1, 0.01))
    kwargs[hparam] = draw(BAD_HPARAMS[hparam])
    return model, hparam, kwargs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=bad_model_call())
def test_create_model_names_the_bad_argument(
    call: tuple[str, str, dict[str, Any]], tally: Tally
) -> None:
    model, hparam, kwargs = call
    with pytest.raises(ValueError) as error:
        create_model(model, **kwargs)
    tally.inject("malformed create_model argument")
    assert names(str(error.value), hparam), str(error.value)


BAD_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "batch_size": bad_int(1, size=True),
    "val_fraction": bad_float(0.0, 1.0).filter(lambda x: x != 0.0),
    "seed": st.one_of(not_a_number(), st.integers(max_value=-1), HUGE),
    "split_seed": st.one_of(  # None is allowed: it follows `seed`
        not_a_number().filter(lambda v: v is not None), st.integers(max_value=-1), HUGE
    ),
    "normalize": a_word_not_in(("none", "minmax", "standard", "pca")),
    # larger than the data keeps it all, as documented
    "train_size": st.one_of(st.integers(max_value=0), TEXT, NON_FINITE, st.floats(0.1, 9.9)),
    "augment": st.one_of(
        st.dictionaries(
            TEXT.filter(lambda k: k not in ("rotation", "flip", "zoom", "shift", "noise", "p")),
            st.floats(0, 1),
            min_size=1,
            max_size=2,
        ),
        st.fixed_dictionaries({"p": st.one_of(NON_FINITE, st.floats(1.01, 1e300), TEXT)}),
        st.fixed_dictionaries({"noise": st.one_of(NON_FINITE, st.floats(max_value=-0.01), TEXT)}),
        st.fixed_dictionaries({"zoom": st.one_of(NON_FINITE, HUGE, TEXT)}),
        st.lists(st.integers(), min_size=1),
        TEXT,
    ),
    "augment_backend": a_word_not_in(("device", "albumentations")),
    "num_workers": st.one_of(st.integers(max_value=-1), HUGE, TEXT, NON_FINITE, OTHER),
    "data_dir": st.one_of(st.integers(), NON_FINITE, OTHER, st.lists(TEXT, min_size=1)),
    "mirror": st.one_of(st.integers(), NON_FINITE, st.lists(TEXT, min_size=1)),
    "n_samples": st.one_of(st.integers(max_value=19), HUGE, TEXT, NON_FINITE),
    "noise": st.one_of(st.floats(max_value=-0.001), NON_FINITE, TEXT, OTHER),
    "character": st.one_of(st.text(min_size=2, max_size=5), st.just(""), st.just(" "), OTHER),
    "image_size": st.one_of(st.integers(max_value=0), HUGE, TEXT, NON_FINITE),
    "grayscale": BAD_FLAG,
    # csv: `path` and `target` are required (None is missing), `drop` is a list of names
    "path": st.one_of(
        st.integers(), NON_FINITE, OTHER, st.lists(TEXT), TEXT.map(lambda s: f"no-such/{s}.csv")
    ),
    "target": st.one_of(st.integers(), NON_FINITE, OTHER, st.lists(TEXT), st.just("")),
    "drop": st.one_of(st.integers(), NON_FINITE, TEXT, st.lists(st.integers(), min_size=1)),
}


def test_every_option_has_malformed_values() -> None:
    for name in list_datamodules():
        assert set(datamodule_options(name)) <= set(BAD_OPTIONS), name


@st.composite
def bad_datamodule_call(draw: st.DrawFn) -> tuple[str, str, Any]:
    name = draw(st.sampled_from(list_datamodules()))
    option = draw(st.sampled_from(sorted(datamodule_options(name))))
    return name, option, draw(BAD_OPTIONS[option])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=bad_datamodule_call())
def test_create_datamodule_names_the_bad_argument(call: tuple[str, str, Any], tally: Tally) -> None:
    name, option, value = call
    with pytest.raises(ValueError) as error:
        create_datamodule(name, **{option: value})
    tally.inject("malformed create_datamodule argument")
    assert names(str(error.value), option), str(error.value)
