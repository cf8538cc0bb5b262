"""StackedModels: per-member dropout, forward, batchnorm, state dicts, compaction, refusals."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from regzoo.zoo import Classifier, create_model
from regzoo.zoo.population import (
    MemberSchedulers,
    PopulationError,
    StackedModels,
    StackedOptimizer,
    batch_refusal,
    check_compatible,
)
from tests.zoo.helpers import own_rng_one_thread  # noqa: F401 (a fixture)

CNN: dict[str, Any] = {
    "input_shape": (2, 6, 6),
    "num_classes": 3,
    "channels": (3,),
    "hidden": (7,),
    "batchnorm": True,
    "normalize": "standard",
}


pytestmark = pytest.mark.usefixtures("own_rng_one_thread")


def members(name: str, hps: list[dict[str, Any]], **shared: Any) -> list[Classifier]:
    """One model per hparam dict, each with its own seed and input statistics."""
    x = torch.randn(40, *shared["input_shape"]) * 3 + 1
    out = []
    for k, hp in enumerate(hps):
        torch.manual_seed(k)
        out.append(create_model(name, **shared, **hp).fit_input(x[k:]))
    return out


def step(stack: StackedModels, opt: StackedOptimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    logits = stack(x)  # (K, B, C)
    ce = F.cross_entropy(logits.transpose(1, 2), y.expand(stack.size, -1), reduction="none")
    ce.mean(dim=1).sum().backward()
    opt.step(stack.add_penalty({n: p.grad for n, p in stack.params.items()}))
    for p in stack.params.values():
        p.grad = None


def test_dropout_rate_per_member() -> None:
    """Hidden units all 1 and an all-ones output row: logit 0 counts the kept units / (1 - p)."""
    rates, width, batch = (0.0, 0.3, 0.3, 0.6), 4000, 20
    shared = {"input_shape": (3,), "num_classes": 2, "hidden": (width,), "activation": "identity"}
    models = members("fnn", [{"dropout": p} for p in rates], **shared)
    for m in models:
        torch.nn.init.zeros_(m.net[1][0].weight)
        torch.nn.init.ones_(m.net[1][0].bias)
        torch.nn.init.ones_(m.net[2].weight)
        torch.nn.init.zeros_(m.net[2].bias)
    stack = StackedModels(models).train()
    with torch.no_grad():
        logits = stack(torch.randn(batch, 3))[:, :, 0]  # (K, B)
        evaluated = stack.eval()(torch.randn(batch, 3))[:, :, 0]
    assert torch.equal(logits[0], torch.full((batch,), float(width)))  # p = 0: identity
    assert torch.equal(evaluated, torch.full((len(rates), batch), float(width)))
    for k, p in enumerate(rates[1:], start=1):
        kept = logits[k] * (1 - p)  # (B,) kept units per sample
        dropped = 1 - kept.sum().item() / (batch * width)
        sd = math.sqrt(p * (1 - p) / (batch * width))
        assert abs(dropped - p) < 5 * sd, (k, dropped, p)
    assert not torch.equal(logits[1], logits[2]), "members 1 and 2 drew the same masks"


def test_forward_and_batchnorm_match_each_model() -> None:
    hps = [{"dropout": 0.0}, {"dropout": 0.2}, {"dropout": 0.5}]
    models = members("cnn", hps, **CNN)
    stack = StackedModels(models)
    x = torch.randn(5, *CNN["input_shape"])
    with torch.no_grad():
        out = stack.eval()(x)  # (K, B, C)
        each = stack(torch.stack([x, x + 1, x - 1]), per_member=True)
    for k, m in enumerate(models):
        m.eval()
        torch.testing.assert_close(out[k], m(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(each[k], m(x + (0, 1, -1)[k]), rtol=1e-5, atol=1e-5)
    # Training mode: batchnorm's running statistics update per member (dropout 0 for all).
    models = members("cnn", [{}, {}, {}], **CNN)
    stack = StackedModels(models).train()
    with torch.no_grad():
        out = stack(x)
    for k, m in enumerate(models):
        m.train()
        torch.testing.assert_close(out[k], m(x), rtol=1e-5, atol=1e-5)
        mine = stack.member_state_dict(k)
        for key, value in m.state_dict().items():
            torch.testing.assert_close(mine[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert stack.member_state_dict(0)["net.0.1.num_batches_tracked"].item() == 1


def test_round_trip_after_training() -> None:
    models = members("cnn", [{"lr": 0.1}, {"lr": 0.01, "dropout": 0.3}], optimizer="sgd", **CNN)
    stack = StackedModels(models)
    opt = StackedOptimizer(stack)
    x, y = torch.randn(8, *CNN["input_shape"]), torch.randint(0, 3, (8,))
    for _ in range(3):
        step(stack.train(), opt, x, y)
    with torch.no_grad():
        out = stack.eval()(x)
    for k in range(2):
        state = stack.member_state_dict(k)
        assert list(state) == list(models[k].state_dict())
        assert all(not t.requires_grad and t.device.type == "cpu" for t in state.values())
        fresh = create_model("cnn", **stack.hparams[k])
        assert stack.load_into(k, fresh) is fresh
        with torch.no_grad():
            torch.testing.assert_close(fresh.eval()(x), out[k], rtol=1e-5, atol=1e-5)
        assert not torch.equal(state["net.0.0.weight"], models[k].state_dict()["net.0.0.weight"])
    with pytest.raises(RuntimeError, match="member 0 has"):  # another architecture's model
        stack.load_into(0, create_model("cnn", **{**stack.hparams[0], "hidden": (4,)}))


def test_fnn_with_and_without_dropout_stack() -> None:
    shared = {"input_shape": (4,), "num_classes": 3, "hidden": (6, 5)}
    models = members("fnn", [{"dropout": 0.0}, {"dropout": 0.4}], **shared)
    assert len(list(models[0].net.modules())) != len(list(models[1].net.modules()))
    stack = StackedModels(models)
    x = torch.randn(9, 4)
    with torch.no_grad():
        train_out = stack.train()(x)  # member 0 has p = 0: exactly its own forward
        torch.testing.assert_close(train_out[0], models[0].train()(x))
        out = stack.eval()(x)
    for k, m in enumerate(models):
        assert list(stack.member_state_dict(k)) == list(m.state_dict())
        torch.testing.assert_close(out[k], m.eval()(x))


def test_keep_compacts_members() -> None:
    hps = [{"lr": lr, "betas": (b, 0.999)} for lr, b in ((0.1, 0.9), (0.2, 0.8), (0.3, 0.7))]
    models = members("cnn", hps, scheduler="step", step_size=1, gamma=0.5, **CNN)
    stack = StackedModels(models)
    opt = StackedOptimizer(stack)
    schedulers = MemberSchedulers(stack, opt, max_epochs=5)
    x, y = torch.randn(8, *CNN["input_shape"]), torch.randint(0, 3, (8,))
    step(stack.train(), opt, x, y)
    with torch.no_grad():
        before = stack.eval()(x)
    states = [stack.member_state_dict(k) for k in range(3)]
    stack.keep([2, 0])
    opt.keep([2, 0])
    schedulers.keep([2, 0])
    with torch.no_grad():
        after = stack(x)
    assert torch.equal(after, before[[2, 0]])
    assert [h["lr"] for h in stack.hparams] == [0.3, 0.1] == opt.lr.tolist()
    assert stack.size == 2 and all(p.is_leaf and p.requires_grad for p in stack.params.values())
    for k, old in enumerate((2, 0)):
        for key, value in stack.member_state_dict(k).items():
            assert torch.equal(value, states[old][key]), key
    step(stack.train(), opt, x, y)  # the compacted optimizer state still fits
    schedulers.step()
    assert opt.lr.tolist() == [0.15, 0.05]


@pytest.mark.parametrize(
    ("second", "key"),
    [
        (("fnn", {"hidden": (5, 5)}), "'hidden'.*widths, not depth"),
        (("fnn", {"activation": "tanh"}), "'activation'"),
        (("fnn", {"decay_bias": True}), "'decay_bias'"),
        (("fnn", {"temperature": 2.0}), "member 1: temperature=2.0 is a calibration"),
        (("linear", {}), "model"),
        (("fnn", {"normalize": "pca"}), "'normalize'.*normalize among minmax, none, standard"),
    ],
)
def test_check_compatible_refuses(second: tuple[str, dict[str, Any]], key: str) -> None:
    shared = {"input_shape": (4,), "num_classes": 3}
    first = create_model("fnn", hidden=(5,), **shared)
    name, hp = second
    other = create_model(name, **({"hidden": (5,)} if name == "fnn" else {}) | hp, **shared)
    with pytest.raises(PopulationError, match=key) as info:
        check_compatible([first, other])
    assert "\n" not in str(info.value)
    # Members may differ in training knobs, optimizer and schedule kinds, widths, and in a
    # normalization that scales.
    kinds = {"optimizer": "sgd", "scheduler": "step", "lr": 0.5, "dropout": 0.2}
    check_compatible([first, create_model("fnn", hidden=(9,), **kinds, **shared)])
    check_compatible([first, create_model("fnn", hidden=(5,), normalize="minmax", **shared)])


def test_a_temperature_divides_the_logits_and_a_bad_one_is_refused() -> None:
    """`temperature` (set by `regzoo export --calibrate`) rescales the confidence only."""
    plain = create_model("fnn", input_shape=(4,), num_classes=3, hidden=(5,))
    warm = create_model("fnn", input_shape=(4,), num_classes=3, hidden=(5,), temperature=2.5)
    warm.load_state_dict(plain.state_dict())
    x = torch.randn(6, 4)
    torch.testing.assert_close(warm(x), plain(x) / 2.5)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            create_model("fnn", input_shape=(4,), num_classes=3, temperature=bad)


def test_rnn_is_refused() -> None:
    rnn = create_model("rnn", input_shape=(2, 5), num_classes=3, hidden_size=4)
    with pytest.raises(PopulationError, match=r"rnn cannot be batched: its layer 'net\.1\.rnn'"):
        StackedModels([rnn, rnn])


class Inner(nn.Module):
    """Any layer under a name of its own (a recurrent one returns its output and state)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.anything = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.anything(x)
        return out[0] if isinstance(out, tuple) else out


def vmap_batches(model: nn.Module) -> bool:
    """Whether vmap runs the forward and backward of 2 copies of `model` on (5, 4) inputs."""
    params, buffers = stack_module_state([model, copy.deepcopy(model)])

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, b), (x,))

    try:
        vmap(forward, in_dims=(0, 0, None), randomness="different")(
            params, buffers, torch.zeros(5, 4)
        ).sum().backward()
    except RuntimeError:
        return False
    return True


RECURRENT = [nn.GRU(4, 4), nn.LSTM(4, 4), nn.RNN(4, 4), nn.LSTMCell(4, 4), nn.GRUCell(4, 4)]


# vmap runs GRUCell and RNNCell op by op, with a warning: batchable, slowly.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize(
    "layer",
    [*RECURRENT, nn.RNNCell(4, 4), nn.LayerNorm(4), nn.Conv1d(5, 5, 1)],
    ids=lambda layer: type(layer).__name__,
)
def test_a_model_is_refused_by_its_layers_exactly_where_vmap_cannot_batch_them(
    layer: nn.Module,
) -> None:
    model = nn.Sequential(nn.Linear(4, 4), Inner(layer))
    refusal = batch_refusal(model)
    assert (refusal is None) == vmap_batches(model)
    if refusal is not None:
        assert refusal == (
            f"its layer '1.anything' ({type(layer).__name__}) has no batching rule in "
            "torch.func.vmap"
        )


def test_a_dropout_other_than_nn_dropout_is_refused() -> None:
    assert batch_refusal(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))) is None
    refusal = batch_refusal(nn.Sequential(nn.Linear(4, 4), nn.AlphaDropout(0.5)))
    assert refusal == "its layer '1' (AlphaDropout) cannot take a rate per member (only " + (
        "nn.Dropout can)"
    )


def test_diverging_member_leaves_the_others_alone() -> None:
    """Member 1 (lr 10, l2 1) blows up to inf/NaN; members 0 and 2 train as without it."""
    hps = [
        {"lr": 0.1, "grad_clip": 0.5},
        {"lr": 10.0, "l2": 1.0},
        {"lr": 0.05, "weight_decay": 0.1},
    ]
    models = members("cnn", hps, optimizer="momentum", **CNN)
    full = StackedModels(models)
    without = StackedModels([models[0], models[2]])
    opt_full, opt_without = StackedOptimizer(full), StackedOptimizer(without)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        x = torch.randn(8, *CNN["input_shape"], generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        step(full.train(), opt_full, x, y)
        step(without.train(), opt_without, x, y)
    diverged = full.member_state_dict(1)["net.0.0.weight"]
    assert not torch.isfinite(diverged).all()
    for k, j in ((0, 0), (2, 1)):
        theirs = without.member_state_dict(j)
        for key, value in full.member_state_dict(k).items():
            assert torch.isfinite(value.float()).all(), key
            torch.testing.assert_close(value, theirs[key], rtol=1e-5, atol=1e-5, msg=key)


def test_inactive_members_do_not_change() -> None:
    models = members(
        "fnn",
        [{"lr": 0.1}, {"lr": 0.2}],
        optimizer="adam",
        hidden=(5,),
        input_shape=(4,),
        num_classes=3,
    )
    stack = StackedModels(models)
    opt = StackedOptimizer(stack)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    step(stack, opt, x, y)
    before = stack.member_state_dict(1)
    state = {n: {k: t[1].clone() for k, t in s.items()} for n, s in opt.state.items()}
    logits = stack(x)
    F.cross_entropy(logits.flatten(0, 1), y.repeat(2)).backward()
    opt.step({n: p.grad for n, p in stack.params.items()}, active=torch.tensor([True, False]))
    for key, value in stack.member_state_dict(1).items():
        assert torch.equal(value, before[key]), key
    for n, s in opt.state.items():
        for k, t in s.items():
            assert torch.equal(t[1], state[n][k]), (n, k)
    assert opt.steps.tolist() == [2.0, 1.0]


def test_to_double_keeps_leaves() -> None:
    stack = StackedModels(members("cnn", [{}, {}], **CNN)).to(dtype=torch.float64)
    assert all(
        p.dtype == torch.float64 and p.is_leaf and p.requires_grad for p in stack.params.values()
    )
    assert stack.buffers["net.0.1.num_batches_tracked"].dtype == torch.long
    assert stack.buffers["pipeline.fitted"].dtype == torch.bool
    assert stack(torch.randn(3, *CNN["input_shape"], dtype=torch.float64)).dtype == torch.float64


def test_each_member_schedules_over_its_own_epochs() -> None:
    """Members with their own `max_epochs` (`MemberSchedulers(max_epochs=[...])`): each cosine
    follows torch's CosineAnnealingLR over its own period."""
    hp = {"input_shape": (4,), "num_classes": 3, "hidden": (5,), "scheduler": "cosine"}
    models = members("fnn", [{"lr": 0.1}, {"lr": 0.2}], **hp)
    stack = StackedModels(models)
    opt = StackedOptimizer(stack)
    schedulers = MemberSchedulers(stack, opt, max_epochs=[4, 10])
    references = []
    for lr, period in ((0.1, 4), (0.2, 10)):
        carrier = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        references.append((carrier, torch.optim.lr_scheduler.CosineAnnealingLR(carrier, period)))
    for _ in range(4):
        schedulers.step()
        for carrier, scheduler in references:
            carrier.step()
            scheduler.step()
    expected = [carrier.param_groups[0]["lr"] for carrier, _ in references]
    assert opt.lr.tolist() == pytest.approx(expected, abs=1e-15)
    assert opt.lr[0] == pytest.approx(0.0, abs=1e-15) and opt.lr[1] > 0.1  # periods differ
    with pytest.raises(ValueError, match="max_epochs: 3 values for 2 members"):
        MemberSchedulers(stack, opt, max_epochs=[4, 10, 2])
