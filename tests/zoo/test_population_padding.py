"""Members of different widths in one population: zero padding keeps each its own network.

Every member is trained as `PopulationModule` does it (one gradient of the sum of the members'
losses, `mask_grads`, `StackedOptimizer.step`) and compared, in float64 after 100 steps, with
the same member trained alone by torch.optim (`train_alone`, the reference loop of
test_population_equivalence.py). Sigmoid units make the padding bite: a padded hidden unit
outputs sigmoid(0) = 0.5, so its out-weights get a gradient that only `mask_grads` removes.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from regzoo.zoo import Classifier, create_model
from regzoo.zoo.population import PopulationError, StackedModels, StackedOptimizer
from tests.zoo.helpers import own_rng_one_thread, trainer  # noqa: F401 (a fixture)
from tests.zoo.test_population_equivalence import (
    LRS,
    MEMBERS,
    NOISE_TOLERANCE,
    assert_same,
    batches,
    data,
    train_alone,
)

pytestmark = pytest.mark.usefixtures("own_rng_one_thread")

# Each stacked tensor is padded to the largest size per dimension, and no member is the largest
# everywhere in the 2-layer and cnn cases.
WIDTHS: dict[str, tuple[dict[str, Any], ...]] = {
    "fnn-1": ({"hidden": (8,)}, {"hidden": (32,)}, {"hidden": (128,)}),
    "fnn-2": ({"hidden": (8, 16)}, {"hidden": (64, 32)}, {"hidden": (16, 64)}),
    "cnn": (
        {"channels": (2, 3), "hidden": (5,)},
        {"channels": (4, 2), "hidden": (3,)},
        {"channels": (3, 3), "hidden": (7,)},
    ),
}
SHAPES = {"fnn-1": (4,), "fnn-2": (4,), "cnn": (1, 6, 6)}
# A bias feeding batchnorm has a gradient of exactly 0 plus rounding noise, which Adam and
# RMSprop amplify (see NOISE_DRIVEN in test_population_equivalence.py); so does its running mean.
NOISE_DRIVEN = re.compile(r"net\.\d+\.(0\.bias|1\.running_mean)$")


@pytest.fixture(scope="module")
def alone_trainer() -> L.Trainer:
    """What `train_alone` attaches to each model (`configure_optimizers` may read it)."""
    return trainer(max_epochs=10)


def member(variant: str, optimizer: str, k: int, x: torch.Tensor, **arch: Any) -> Classifier:
    """Member k: its own widths, seed, input statistics and training constants (L1 for member
    0, L2 for 1, decoupled decay and a biting clip for 2), double precision."""
    torch.manual_seed(k)
    model = create_model(
        "cnn" if variant == "cnn" else "fnn",
        input_shape=SHAPES[variant],
        num_classes=3,
        normalize="standard",
        optimizer=optimizer,
        lr=LRS[optimizer][k],
        **WIDTHS[variant][k],
        **arch,
        **MEMBERS[k],
    ).double()
    return model.fit_input(x[k:])


def train_population(
    stack: StackedModels,
    d: dict[str, torch.Tensor],
    *,
    keep: tuple[int, list[int]] | None = None,
    masked: bool = True,
) -> None:
    """`PopulationModule.training_step`'s update; `keep=(step, rows)` compacts after `step`."""
    opt = StackedOptimizer(stack)
    stack.train()
    for step, x, y in batches(d):
        if keep is not None and step == keep[0]:
            stack.keep(keep[1])
            opt.keep(keep[1])
        logits = stack(x)  # (K, B, C)
        ce = F.cross_entropy(logits.transpose(1, 2), y.expand(stack.size, -1), reduction="none")
        names = list(stack.params)
        each = torch.autograd.grad(ce.mean(dim=1).sum(), [stack.params[n] for n in names])
        grads = stack.add_penalty(dict(zip(names, each, strict=True)))
        opt.step(stack.mask_grads(grads) if masked else grads)


def padded_entries(stack: StackedModels) -> dict[str, torch.Tensor]:
    """Every padded entry of every stacked tensor, by name (flattened)."""
    tensors = stack.params | stack.buffers
    return {n: tensors[n].detach()[~mask] for n, mask in stack.masks.items()}


def check_members(
    stack: StackedModels,
    rows: dict[int, int],
    variant: str,
    optimizer: str,
    d: dict[str, torch.Tensor],
    alone_trainer: L.Trainer,
    **arch: Any,
) -> None:
    """Each member (stack row -> member k) equals member k trained alone; its state dict loads
    strictly into a model built with its hparams, which then computes the same logits."""
    for row, k in rows.items():
        model = member(variant, optimizer, k, d["x"], **arch)
        clipped, _ = train_alone(model, d, alone_trainer)
        assert clipped > 0 or not model.hp.grad_clip, "the clipping member never clipped"
        mine, theirs = stack.member_state_dict(row), model.state_dict()
        assert {n: t.shape for n, t in mine.items()} == {n: t.shape for n, t in theirs.items()}
        noise = {n for n in theirs if arch.get("batchnorm") and NOISE_DRIVEN.match(n)}
        assert_same(mine, theirs, noise, k)
        built = create_model(model.model_name, **stack.hparams[row]).double()
        fresh = stack.load_into(row, built)
        with torch.no_grad():
            torch.testing.assert_close(
                fresh.eval()(d["x_val"]), model.eval()(d["x_val"]), rtol=0, atol=NOISE_TOLERANCE
            )


CASES = [
    ("fnn-1", "adam", {"activation": "relu"}),
    ("fnn-1", "sgd", {"activation": "sigmoid"}),
    ("fnn-1", "adam", {"activation": "sigmoid", "batchnorm": True}),
    ("fnn-1", "sgd", {"activation": "relu", "batchnorm": True}),
    ("fnn-2", "adamw", {"activation": "relu"}),
    ("fnn-2", "adam", {"activation": "sigmoid", "batchnorm": True}),
    ("fnn-2", "momentum", {"activation": "sigmoid"}),
    ("fnn-2", "rmsprop", {"activation": "relu", "batchnorm": True}),
    ("fnn-2", "nesterov", {"activation": "tanh"}),
    ("cnn", "adam", {"activation": "relu", "batchnorm": True}),
    ("cnn", "sgd", {"activation": "sigmoid"}),
]


@pytest.mark.parametrize(("variant", "optimizer", "arch"), CASES)
def test_member_of_other_width_trains_as_alone(
    variant: str, optimizer: str, arch: dict[str, Any], alone_trainer: L.Trainer
) -> None:
    d = data(SHAPES[variant])
    stack = StackedModels([member(variant, optimizer, k, d["x"], **arch) for k in range(3)])
    assert stack.masks, "no member was padded"
    train_population(stack, d)
    for name, values in padded_entries(stack).items():
        assert values.numel() > 0 and torch.all(values == 0), name
    check_members(stack, {0: 0, 1: 1, 2: 2}, variant, optimizer, d, alone_trainer, **arch)


def test_keep_moves_the_masks_with_the_members(alone_trainer: L.Trainer) -> None:
    """Halfway, the middle width leaves and the widest member moves to row 0: the masks follow
    (with member 0's mask on row 0, member 2's real units 8..127 would be frozen)."""
    variant, optimizer, arch = "fnn-1", "adam", {"activation": "sigmoid"}
    d = data(SHAPES[variant])
    stack = StackedModels([member(variant, optimizer, k, d["x"], **arch) for k in range(3)])
    masks = dict(stack.masks)
    train_population(stack, d, keep=(50, [2, 0]))
    assert stack.size == 2
    for name, mask in stack.masks.items():
        assert torch.equal(mask, masks[name][[2, 0]]), name
    assert all(torch.all(v == 0) for v in padded_entries(stack).values())
    check_members(stack, {0: 2, 1: 0}, variant, optimizer, d, alone_trainer, **arch)


def test_padding_moves_without_mask_grads() -> None:
    """Why `mask_grads` exists: sigmoid(0) = 0.5 gives padded out-weights a gradient."""
    d = data(SHAPES["fnn-1"])
    models = [member("fnn-1", "sgd", k, d["x"], activation="sigmoid") for k in range(3)]
    stack = StackedModels(models)
    train_population(stack, d, masked=False)
    assert torch.any(padded_entries(stack)["net.2.weight"] != 0)


def test_masks_mark_each_members_own_entries() -> None:
    d = data(SHAPES["fnn-2"])
    stack = StackedModels([member("fnn-2", "sgd", k, d["x"]) for k in range(3)])
    padded = ["net.1.0.weight", "net.1.0.bias", "net.2.0.weight", "net.2.0.bias", "net.3.weight"]
    assert list(stack.masks) == padded  # the output layer's bias has num_classes entries
    w = stack.masks["net.2.0.weight"]  # (K, 64, 64): member k's (hidden[1], hidden[0])
    assert w.shape == (3, 64, 64)
    for k, spec in enumerate(WIDTHS["fnn-2"]):
        out, inp = spec["hidden"][1], spec["hidden"][0]
        assert int(w[k].sum()) == out * inp and bool(w[k, :out, :inp].all()), k


def test_equal_widths_pay_nothing() -> None:
    """No member padded: no masks, and `mask_grads` hands back the very same dict."""
    same = [create_model("fnn", input_shape=(4,), num_classes=3, hidden=(8,)) for _ in range(2)]
    stack = StackedModels(same)
    grads = {n: torch.ones_like(p) for n, p in stack.params.items()}
    assert stack.masks == {} and stack.mask_grads(grads) is grads


@pytest.mark.parametrize(
    ("name", "first", "second", "message"),
    [
        ("fnn", {"hidden": (8,)}, {"hidden": (8, 16)}, "members have 1 and 2 hidden layers"),
        ("fnn", {"hidden": (8,)}, {"hidden": ()}, "members have 1 and 0 hidden layers"),
        ("cnn", {"channels": (2,)}, {"channels": (2, 3)}, "members have 1 and 2 conv blocks"),
        ("cnn", {"hidden": (4,)}, {"hidden": (4, 4)}, "members have 1 and 2 hidden layers"),
        ("fnn", {"input_shape": (1, 6, 6)}, {"input_shape": (2, 6, 6)}, "'input_shape' differs"),
        ("fnn", {"activation": "relu"}, {"activation": "tanh"}, "'activation' differs"),
        ("fnn", {"batchnorm": False}, {"batchnorm": True}, "'batchnorm' differs"),
    ],
)
def test_other_depth_or_layers_are_refused(
    name: str, first: dict[str, Any], second: dict[str, Any], message: str
) -> None:
    shared: dict[str, Any] = {"input_shape": (1, 6, 6), "num_classes": 3}
    models = [create_model(name, **(shared | hp)) for hp in (first, second)]
    with pytest.raises(PopulationError, match=re.escape(message)) as info:
        StackedModels(models)
    text = str(info.value)
    assert "\n" not in text
    if "layers" in message or "blocks" in message:
        assert "may differ in widths, not depth" in text and "member 1" in text


def test_dropout_with_padding() -> None:
    """Padded units draw dropout masks too: harmless, the padding stays 0 and each member's
    exported weights compute what the stack computes for it."""
    d = data(SHAPES["fnn-2"])
    models = [member("fnn-2", "adam", k, d["x"], dropout=p) for k, p in enumerate((0.0, 0.3, 0.5))]
    stack = StackedModels(models)
    train_population(stack, d)
    assert all(torch.all(v == 0) for v in padded_entries(stack).values())
    with torch.no_grad():
        logits = stack.eval()(d["x_val"])  # (K, B, C)
        for k in range(3):
            own = create_model("fnn", **stack.hparams[k]).double()
            own = stack.load_into(k, own).eval()
            torch.testing.assert_close(own(d["x_val"]), logits[k], rtol=0, atol=1e-12)
