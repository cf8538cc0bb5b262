"""The batched forward (zoo/population/batched.py) against each member's own model, in float64:
logits, gradients, batchnorm running statistics, dropout; and the vmap fallback."""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.zoo import Classifier, create_model
from regzoo.zoo.population import StackedModels
from tests.zoo.helpers import own_rng_one_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("own_rng_one_thread")

TOLERANCE = 1e-12
# Every architecture the zoo builds for populations, with its optional layers switched on.
VARIANTS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "linear": ("linear", (4,), {}),
    "fnn": ("fnn", (4,), {"hidden": (5, 6), "activation": "tanh"}),
    "fnn-bn": ("fnn", (4,), {"hidden": (5, 6), "batchnorm": True, "activation": "gelu"}),
    "fnn-nobias": ("fnn", (2,), {"hidden": (3,), "bias": False, "activation": "abs"}),
    "cnn-2d": ("cnn", (2, 8, 8), {"channels": (3, 4), "hidden": (7,)}),
    "cnn-2d-bn": ("cnn", (2, 8, 8), {"channels": (3, 4), "hidden": (7,), "batchnorm": True}),
    "cnn-1d": ("cnn", (2, 12), {"channels": (3, 4), "hidden": (), "activation": "leaky_relu"}),
    "cnn-1d-bn": ("cnn", (2, 12), {"channels": (3,), "hidden": (5,), "batchnorm": True}),
}
NORMALIZE = ("none", "minmax", "standard", "pca")
CASES = [
    (v, n) for v in VARIANTS for n in NORMALIZE if not (VARIANTS[v][0] == "cnn" and n == "pca")
]
K, BATCH = 3, 10


def members(variant: str, normalize: str, hps: list[dict[str, Any]] | None = None) -> list[Any]:
    """K double-precision members of `variant`: own seeds, own input statistics."""
    name, shape, arch = VARIANTS[variant]
    x = raw(shape, 40, seed=99)
    out = []
    for k, hp in enumerate(hps or [{}] * K):
        torch.manual_seed(k)
        model = create_model(
            name, input_shape=shape, num_classes=3, normalize=normalize, **arch, **hp
        )
        out.append(model.double().fit_input(x[4 * k :]))
    return out


def raw(shape: tuple[int, ...], n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64) * 2 + 1


def labels(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def assert_close(mine: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    diff = (mine - theirs).abs().max().item() if mine.numel() else 0.0
    assert mine.shape == theirs.shape and diff <= TOLERANCE, f"{what}: max |Δ| = {diff:.3g}"


def own_parameters(model: Classifier, stack: StackedModels) -> dict[str, torch.Tensor]:
    """The model's parameters under the stack's names (members of one structure share them)."""
    own = dict(model.named_parameters())
    assert set(own) == set(stack.params)
    return own


@pytest.mark.parametrize(("variant", "normalize"), CASES)
def test_logits_gradients_and_running_stats_match_each_model(variant: str, normalize: str) -> None:
    models = members(variant, normalize)
    stack = StackedModels(models).to(dtype=torch.float64)
    assert stack.batched is not None, "the zoo's networks take the batched path"
    x, y = raw(VARIANTS[variant][1], BATCH, seed=1), labels(BATCH)
    logits = stack.train()(x)  # (K, B, C)
    ce = F.cross_entropy(logits.transpose(1, 2), y.expand(K, -1), reduction="none").mean(1)
    grads = torch.autograd.grad(ce.sum(), list(stack.params.values()))
    for k, model in enumerate(models):
        mine = model.train()(x)
        assert_close(logits[k], mine, f"member {k} logits")
        own = own_parameters(model, stack)
        theirs = torch.autograd.grad(F.cross_entropy(mine, y), list(own.values()))
        by_name = dict(zip(own, theirs, strict=True))
        for name, grad in zip(stack.params, grads, strict=True):
            assert_close(grad[k], by_name[name], f"member {k} d/d{name}")
        state = stack.member_state_dict(k)
        for key, value in model.state_dict().items():  # batchnorm's statistics and counts
            if value.is_floating_point():
                assert_close(state[key], value, f"member {k} {key}")
            else:
                assert torch.equal(state[key], value), (k, key)
    # Eval mode reads the running statistics the training forward left.
    with torch.no_grad():
        evaluated = stack.eval()(x)
    for k, model in enumerate(models):
        assert_close(evaluated[k], model.eval()(x), f"member {k} eval logits")


@pytest.mark.parametrize(
    ("variant", "normalize"),
    [("fnn-bn", "pca"), ("linear", "minmax"), ("cnn-2d-bn", "standard"), ("cnn-1d", "none")],
)
def test_per_member_inputs(variant: str, normalize: str) -> None:
    models = members(variant, normalize)
    stack = StackedModels(models).to(dtype=torch.float64)
    xs = raw(VARIANTS[variant][1], K * BATCH, seed=2).view(K, BATCH, *VARIANTS[variant][1])
    with torch.no_grad():
        logits = stack.train()(xs, per_member=True)
    for k, model in enumerate(models):
        assert_close(logits[k], model.train()(xs[k]), f"member {k}")
    count = stack.buffers.get("net.0.1.num_batches_tracked")
    assert count is None or count.tolist() == [1] * K


def test_batchnorm_statistics_accumulate_per_member() -> None:
    """Several training steps: the in-place updates land in each member's own rows."""
    models = members("cnn-2d-bn", "minmax")
    stack = StackedModels(models).to(dtype=torch.float64).train()
    for step in range(4):
        x = raw((2, 8, 8), BATCH, seed=10 + step)
        with torch.no_grad():
            stack(x)
            for model in models:
                model.train()(x)
    for k, model in enumerate(models):
        state = stack.member_state_dict(k)
        for key in ("net.0.1.running_mean", "net.0.1.running_var", "net.1.1.running_var"):
            assert_close(state[key], model.state_dict()[key], f"member {k} {key}")
        assert state["net.1.1.num_batches_tracked"].item() == 4


@pytest.mark.parametrize("variant", ["fnn", "cnn-2d-bn"])
def test_dropout_eval_is_each_model_and_train_follows_the_global_seed(variant: str) -> None:
    """Eval: dropout is off, each member is its own model. Train: the masks change from draw
    to draw, and `torch.manual_seed` repeats them (the streams are seeded from the global
    generator at every draw, with one torch thread as with two)."""
    hps = [{"dropout": p} for p in (0.1, 0.3, 0.6)]
    models = members(variant, "standard", hps)
    stack = StackedModels(models).to(dtype=torch.float64)
    assert stack.batched is not None
    x = raw(VARIANTS[variant][1], BATCH, seed=3)
    threads = torch.get_num_threads()
    with torch.no_grad():
        evaluated = stack.eval()(x)
        for k, model in enumerate(models):
            assert_close(evaluated[k], model.eval()(x), f"member {k} eval")
        stack.train()
        try:
            torch.set_num_threads(2)  # the streams drawn at once, on two threads
            torch.manual_seed(5)
            first, second = stack(x), stack(x)
            torch.set_num_threads(1)  # one after the other
            torch.manual_seed(5)
            again = stack(x)
        finally:
            torch.set_num_threads(threads)
    assert not torch.equal(first, second), "dropout draws new masks"
    # Equal but for the rounding of a product on one thread against two.
    assert_close(again, first, "torch.manual_seed repeats the masks")
    assert not torch.equal(first, evaluated), "dropout acted"


def test_dropout_at_rate_zero_draws_nothing() -> None:
    """cnn has dropout layers at any rate: at 0 for every member they draw no random numbers,
    as the members' own nn.Dropout(p=0), so the global RNG (batch order) stays each trial's."""
    models = members("cnn-2d", "standard")
    stack = StackedModels(models).to(dtype=torch.float64).train()
    x = raw((2, 8, 8), BATCH, seed=6)
    state = torch.get_rng_state()
    with torch.no_grad():
        logits = stack(x)
    assert torch.equal(torch.get_rng_state(), state)
    for k, model in enumerate(models):
        assert_close(logits[k], model.train()(x), f"member {k}")
    assert torch.equal(torch.get_rng_state(), state)


def test_members_at_rate_zero_draw_nothing_and_the_others_draw_as_without_them() -> None:
    """A member at rate 0 among droppers takes no draw and is its own model exactly; the
    droppers, a run of rows at a time, draw the numbers a population of them alone draws."""
    rates = (0.3, 0.0, 0.0, 0.6)
    shared = {"input_shape": (3,), "num_classes": 2, "hidden": (16, 16), "dropout": 0.5}
    models = []
    for k, p in enumerate(rates):
        torch.manual_seed(k)
        models.append(create_model("fnn", **{**shared, "dropout": p}).double())
    droppers = [models[k] for k, p in enumerate(rates) if p > 0]
    x = torch.randn(BATCH, 3, dtype=torch.float64)
    stack = StackedModels(models).to(dtype=torch.float64).train()
    alone = StackedModels(droppers).to(dtype=torch.float64).train()
    with torch.no_grad():
        torch.manual_seed(7)
        logits = stack(x)
        state = torch.get_rng_state()
        torch.manual_seed(7)
        expected = alone(x)
        assert torch.equal(torch.get_rng_state(), state), "the zero-rate members drew"
    assert torch.equal(logits[[0, 3]], expected)
    for k in (1, 2):
        assert_close(logits[k], models[k].eval()(x), f"member {k} (rate 0) as its own model")
    stack.keep([1, 2])  # the droppers leave (an experiment's members stop at their own epochs)
    with torch.no_grad():
        state = torch.get_rng_state()
        left = stack(x)
        assert torch.equal(torch.get_rng_state(), state), "members at rate 0 drew"
    for row, k in enumerate((1, 2)):
        assert_close(left[row], models[k].eval()(x), f"member {k} after the droppers left")


def test_dropout_rate_and_masks_per_member() -> None:
    """Hidden units all 1, an all-ones output row: logit 0 counts the kept units / (1 - p)."""
    rates, width = (0.0, 0.25, 0.25, 0.75), 3000
    shared = {"input_shape": (3,), "num_classes": 2, "hidden": (width,), "activation": "identity"}
    models = []
    for k, p in enumerate(rates):
        torch.manual_seed(k)
        model = create_model("fnn", dropout=p, **shared)
        nn.init.zeros_(model.net[1][0].weight)
        nn.init.ones_(model.net[1][0].bias)
        nn.init.ones_(model.net[2].weight)
        nn.init.zeros_(model.net[2].bias)
        models.append(model)
    stack = StackedModels(models).train()
    assert stack.batched is not None
    with torch.no_grad():
        logits = stack(torch.randn(BATCH, 3))[:, :, 0]  # (K, B)
    assert torch.equal(logits[0], torch.full((BATCH,), float(width))), "p = 0 is the identity"
    for k, p in enumerate(rates[1:], start=1):
        dropped = 1 - (logits[k] * (1 - p)).sum().item() / (BATCH * width)
        sd = math.sqrt(p * (1 - p) / (BATCH * width))
        assert abs(dropped - p) < 5 * sd, (k, dropped, p)
    assert not torch.equal(logits[1], logits[2]), "members 1 and 2 drew the same masks"


class Softsign(nn.Module):
    """A module the batched path does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1 + x.abs())


def test_unknown_module_falls_back_to_vmap() -> None:
    models = members("fnn", "standard")
    for model in models:
        model.net[1][1] = Softsign()  # the first block's activation
    stack = StackedModels(models).to(dtype=torch.float64)
    assert stack.batched is None
    x = raw((4,), BATCH, seed=4)
    with torch.no_grad():
        logits = stack.train()(x)
    for k, model in enumerate(models):
        assert_close(logits[k], model.train()(x), f"member {k}")


@pytest.mark.parametrize(
    "change",
    [
        lambda net: setattr(net[0][1], "momentum", None),  # a cumulative average
        lambda net: setattr(net[0][3], "return_indices", True),
        lambda net: setattr(net[0][0], "padding_mode", "reflect"),
    ],
    ids=["batchnorm-momentum-none", "max-pool-indices", "conv-reflect-padding"],
)
def test_settings_outside_the_batched_ops_fall_back(change: Any) -> None:
    model = members("cnn-2d-bn", "none", [{}])[0]
    assert StackedModels([model]).batched is not None
    change(model.net)
    assert StackedModels([model]).batched is None


def _forward_in_child(conn: Any) -> None:
    torch.set_num_threads(2)
    stack = StackedModels([create_model("fnn", input_shape=(3,), num_classes=2, dropout=0.5)])
    conn.send(tuple(stack.train()(torch.randn(BATCH, 3)).shape))


def test_dropout_draws_in_a_forked_child_of_a_process_that_drew() -> None:
    """The helper thread that draws a stream is the process's own: a child forked after the
    parent drew (a DataLoader worker, a user's multiprocessing) makes its own, not waiting on
    a thread the fork did not copy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stack = StackedModels([create_model("fnn", input_shape=(3,), num_classes=2, dropout=0.5)])
        stack.train()(torch.randn(BATCH, 3))  # the parent's helper now exists
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_forward_in_child, args=(child,))
    process.start()
    try:
        assert parent.poll(60), "the child's dropout draw never finished"
        assert parent.recv() == (1, BATCH, 2)
    finally:
        process.join(10)
        process.kill()
