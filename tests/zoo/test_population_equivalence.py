"""A population trains each member exactly as that member trains alone, in float64.

The reference is a member's own `configure_optimizers()` (torch optimizer and scheduler through
`Classifier` code), stepped as Lightning's automatic optimization does: loss = CE + penalty,
backward, `on_before_optimizer_step` (decoupled decay), `clip_grad_norm_` over the optimizer's
parameters, the optimizer step; the scheduler once per "epoch" of `EPOCH` steps, `plateau` with
the loss on a fixed validation batch in eval mode. `test_reference_is_lightning` checks that
reference against a real `Trainer.fit`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import torch.optim.adam as optim_module

from regzoo.zoo import Classifier, create_model
from regzoo.zoo.classifier import OPTIMIZERS, SCHEDULERS
from regzoo.zoo.population import MemberSchedulers, StackedModels, StackedOptimizer, optim
from tests.zoo.helpers import loader, own_rng_one_thread, trainer  # noqa: F401 (a fixture)

STEPS, EPOCH = 100, 10
MAX_EPOCHS = STEPS // EPOCH
TOLERANCE = 1e-10
# A bias feeding batchnorm has an exact gradient of 0: what backward returns is rounding noise
# (~1e-16), which Adam and RMSprop divide by √v + ε, so any change of summation order (vmap's
# kernels) moves it differently, by lr·noise/ε per step (~1e-9 after 100 steps at ε = 1e-8).
# The batchnorm's running mean carries the same shift (outputs do not: it cancels).
NOISE_DRIVEN = {
    "fnn-bn": {"net.1.0.bias", "net.1.1.running_mean"},
    "cnn-bn": {"net.0.0.bias", "net.0.1.running_mean"},
}
NOISE_TOLERANCE = 1e-8
VARIANTS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "linear": ("linear", (4,), {}),
    "fnn": ("fnn", (4,), {"hidden": (5,)}),
    "fnn-bn": ("fnn", (4,), {"hidden": (5,), "batchnorm": True}),
    "cnn": ("cnn", (1, 6, 6), {"channels": (2,), "hidden": ()}),
    "cnn-bn": ("cnn", (1, 6, 6), {"channels": (2,), "hidden": (), "batchnorm": True}),
}
LRS = {
    "sgd": (0.1, 0.05, 0.2),
    "momentum": (0.05, 0.02, 0.1),
    "nesterov": (0.05, 0.02, 0.1),
    "rmsprop": (3e-3, 1e-3, 1e-2),
    "adam": (1e-2, 3e-3, 3e-2),
    "adamw": (1e-2, 3e-3, 3e-2),
}
# Member 0 has L1, member 1 L2, member 2 decoupled decay and a clip small enough to bite; every
# optimizer reads the constants it uses.
MEMBERS: tuple[dict[str, Any], ...] = (
    {"l1": 1e-3, "momentum": 0.9, "betas": (0.9, 0.999), "eps": 1e-8, "alpha": 0.99},
    {"l2": 1e-2, "momentum": 0.5, "betas": (0.8, 0.99), "eps": 1e-6, "alpha": 0.9},
    {
        "weight_decay": 0.05,
        "grad_clip": 0.05,
        "momentum": 0.7,
        "betas": (0.95, 0.9),
        "eps": 1e-3,
        "alpha": 0.95,
    },
)
SCHEDULES: dict[str, tuple[dict[str, Any], ...]] = {
    "none": ({}, {}, {}),
    "step": (
        {"step_size": 2, "gamma": 0.5},
        {"step_size": 3, "gamma": 0.7},
        {"step_size": 1, "gamma": 0.9},
    ),
    "cosine": ({"min_lr": 0.0}, {"min_lr": 1e-4}, {"min_lr": 1e-3}),
    "plateau": (
        {"plateau_patience": 0, "gamma": 0.5},
        {"plateau_patience": 1, "gamma": 0.3},
        {"plateau_patience": 2, "gamma": 0.7, "min_lr": 1e-3},
    ),
    "piecewise": (
        {"milestones": (3,), "lr_values": (1.0, 0.1)},  # × the member's lr
        {"milestones": (2, 5), "lr_values": (1.0, 0.5, 0.2)},
        {"milestones": (4, 7, 9), "lr_values": (2.0, 1.0, 0.3, 0.1)},
    ),
}


pytestmark = pytest.mark.usefixtures("own_rng_one_thread")


@pytest.fixture(scope="module")
def cosine_trainer() -> L.Trainer:
    """What `configure_optimizers` reads `max_epochs` from for `cosine`."""
    return trainer(max_epochs=MAX_EPOCHS)


def data(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(56, *shape, generator=gen, dtype=torch.float64) * 2 + 1  # (56, *shape)
    w = torch.randn(x[0].numel(), 3, generator=gen, dtype=torch.float64)
    y = (x.flatten(1) @ w).argmax(dim=1)  # (56,)
    return {"x": x[:40], "y": y[:40], "x_val": x[40:], "y_val": y[40:]}


def member(
    variant: str,
    optimizer: str,
    scheduler: str,
    k: int,
    x: torch.Tensor,
    seed: int | None = None,
    normalize: str = "standard",
    shared: dict[str, Any] | None = None,
) -> Classifier:
    """Member k (hparams k of LRS, MEMBERS, SCHEDULES, then `shared`), double precision, with
    its own seed (`seed`, else k) and input statistics of `normalize`."""
    seed = k if seed is None else seed
    name, shape, arch = VARIANTS[variant]
    hparams = {"lr": LRS[optimizer][k], **MEMBERS[k], **(shared or {})}
    schedule = dict(SCHEDULES[scheduler][k])
    if scheduler == "piecewise":
        schedule["lr_values"] = tuple(hparams["lr"] * v for v in schedule["lr_values"])
    torch.manual_seed(seed)
    model = create_model(
        name,
        input_shape=shape,
        num_classes=3,
        normalize=normalize,
        optimizer=optimizer,
        scheduler=scheduler,
        **arch,
        **hparams,
        **schedule,
    ).double()
    return model.fit_input(x[seed:])  # statistics differ between members


def batches(d: dict[str, torch.Tensor]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    for step in range(STEPS):
        i = step % 5
        yield step, d["x"][8 * i : 8 * i + 8], d["y"][8 * i : 8 * i + 8]  # (8, *shape), (8,)


def train_alone(
    model: Classifier, d: dict[str, torch.Tensor], trainer: L.Trainer
) -> tuple[int, float]:
    """Lightning's automatic optimization of one model: (steps that clipped, final lr)."""
    model.trainer = trainer
    config = model.configure_optimizers()
    opt = config["optimizer"] if isinstance(config, dict) else config
    sched = config["lr_scheduler"]["scheduler"] if isinstance(config, dict) else None
    params = [p for g in opt.param_groups for p in g["params"]]
    clipped = 0
    model.train()
    for step, x, y in batches(d):
        loss = F.cross_entropy(model(x), y)
        if model.hp.l1 or model.hp.l2:
            loss = loss + model.penalty()
        opt.zero_grad()
        loss.backward()
        model.on_before_optimizer_step(opt)
        if model.hp.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, model.hp.grad_clip)
            clipped += int(norm > model.hp.grad_clip)
        opt.step()
        if (step + 1) % EPOCH == 0 and sched is not None:
            if model.hp.scheduler == "plateau":
                model.eval()
                with torch.no_grad():
                    sched.step(F.cross_entropy(model(d["x_val"]), d["y_val"]))
                model.train()
            else:
                sched.step()
    return clipped, opt.param_groups[0]["lr"]


def train_population(
    stack: StackedModels,
    d: dict[str, torch.Tensor],
    leave: dict[int, list[int]] | None = None,
) -> StackedOptimizer:
    """Train the population; `leave` maps an epoch-ending step to the rows to keep, which keep
    after the schedulers' step, as `PopulationModule` does."""
    opt = StackedOptimizer(stack)
    schedulers = MemberSchedulers(stack, opt, max_epochs=MAX_EPOCHS)
    stack.train()
    for step, x, y in batches(d):
        logits = stack(x)  # (K, B, C)
        ce = F.cross_entropy(logits.transpose(1, 2), y.expand(stack.size, -1), reduction="none")
        ce.mean(dim=1).sum().backward()  # (K, B) -> (K,) -> ()
        opt.step(stack.add_penalty({n: p.grad for n, p in stack.params.items()}))
        for p in stack.params.values():
            p.grad = None
        if (step + 1) % EPOCH == 0:
            stack.eval()
            with torch.no_grad():
                val = stack(d["x_val"])  # (K, B_val, C)
                val_loss = F.cross_entropy(
                    val.transpose(1, 2), d["y_val"].expand(stack.size, -1), reduction="none"
                ).mean(dim=1)
            stack.train()
            schedulers.step(val_loss)
            if leave and step + 1 in leave:
                for part in (stack, opt, schedulers):
                    part.keep(leave[step + 1])
    return opt


def assert_same(
    mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], noise: set[str], k: int
) -> None:
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        if value.is_floating_point():
            diff = (mine[key] - value).abs().max().item()
            tolerance = NOISE_TOLERANCE if key in noise else TOLERANCE
            assert diff <= tolerance, f"member {k} {key}: max |Δ| = {diff:.3g}"
        else:
            assert torch.equal(mine[key], value), f"member {k} {key}"


def check(variant: str, optimizer: str, scheduler: str, trainer: L.Trainer) -> None:
    d = data(VARIANTS[variant][1])
    stack = StackedModels([member(variant, optimizer, scheduler, k, d["x"]) for k in range(3)])
    opt = train_population(stack, d)
    for k in range(3):
        model = member(variant, optimizer, scheduler, k, d["x"])
        clipped, lr = train_alone(model, d, trainer)
        noise = NOISE_DRIVEN.get(variant, set())
        assert_same(stack.member_state_dict(k), model.state_dict(), noise, k)
        assert opt.lr[k].item() == lr
        assert clipped > 0 or not model.hp.grad_clip, "the clipping member never clipped"


# Every optimizer with every scheduler on the fnn with batchnorm; every other variant with every
# optimizer (schedulers in turn), two of them per variant in every run and the rest marked slow.
FAST_ELSEWHERE = ("nesterov", "adamw")
CROSS: list[Any] = [("fnn-bn", o, s) for o, s in itertools.product(OPTIMIZERS, SCHEDULERS)]
CROSS += [
    pytest.param(
        v,
        o,
        SCHEDULERS[(i + j) % len(SCHEDULERS)],
        marks=() if o in FAST_ELSEWHERE else pytest.mark.slow,
    )
    for i, v in enumerate(VARIANTS)
    for j, o in enumerate(OPTIMIZERS)
    if v != "fnn-bn"
]


@pytest.mark.parametrize(("variant", "optimizer", "scheduler"), CROSS)
def test_member_trains_as_alone(
    variant: str, optimizer: str, scheduler: str, cosine_trainer: L.Trainer
) -> None:
    check(variant, optimizer, scheduler, cosine_trainer)


@pytest.mark.parametrize("variant", ["fnn", "cnn"])
def test_members_that_differ_in_normalize_train_as_alone(
    variant: str, cosine_trainer: L.Trainer
) -> None:
    """`none`, `minmax` and `standard` in one population, features and images alike: the stack
    holds each member's shift and scale (`none`'s 0 and 1, its inputs exactly), and each member
    comes out with its own pipeline's keys and statistics, trained as alone."""
    d = data(VARIANTS[variant][1])
    kinds = ("none", "minmax", "standard")

    def build(k: int) -> Classifier:
        return member(variant, "adam", "none", k, d["x"], normalize=kinds[k])

    stack = StackedModels([build(k) for k in range(3)])
    train_population(stack, d)
    for k in range(3):
        model = build(k)
        train_alone(model, d, cosine_trainer)
        assert_same(stack.member_state_dict(k), model.state_dict(), set(), k)
        out = stack.load_into(k, build(k))
        with torch.no_grad():
            assert (out(d["x_val"]) - model(d["x_val"])).abs().max().item() <= TOLERANCE
    assert not any(key.startswith("pipeline.s") for key in stack.member_state_dict(0))
    assert torch.equal(
        stack.buffers["pipeline.scale"][0], torch.ones_like(stack.buffers["pipeline.scale"][0])
    )


def test_reference_is_lightning() -> None:
    """`train_alone` is what `Trainer.fit` does: decay, clipping, plateau on val/loss."""
    variant, optimizer, scheduler = "fnn-bn", "adam", "plateau"
    d = data(VARIANTS[variant][1])
    fitted = member(variant, optimizer, scheduler, 2, d["x"])  # decay and clipping
    xs = torch.cat([d["x"], d["x"]])  # one epoch = EPOCH batches of 8, as in `batches`
    ys = torch.cat([d["y"], d["y"]])
    run = trainer(max_epochs=MAX_EPOCHS, precision="64-true")
    run.fit(fitted, loader(xs, ys, 8), loader(d["x_val"], d["y_val"], 16))
    alone = member(variant, optimizer, scheduler, 2, d["x"])
    _, lr = train_alone(alone, d, trainer(max_epochs=MAX_EPOCHS))
    assert run.optimizers[0].param_groups[0]["lr"] == lr
    assert lr < LRS[optimizer][2], "the plateau schedule never reduced the rate"
    assert_same(fitted.state_dict(), alone.state_dict(), set(), 2)


# (optimizer, scheduler, hparams k): every optimizer and scheduler kind, and each optimizer with
# the clipping, decaying member 2 or with L1/L2, so that members of one population differ in
# update rule, state, constants and schedule at once.
MIXED: tuple[tuple[str, str, int], ...] = (
    ("sgd", "step", 2),
    ("momentum", "plateau", 1),
    ("nesterov", "cosine", 2),
    ("rmsprop", "piecewise", 0),
    ("adam", "none", 1),
    ("adamw", "plateau", 2),
    ("momentum", "cosine", 0),
    ("adam", "step", 2),
    ("sgd", "piecewise", 1),
    ("adamw", "none", 0),
)
# Rule buffers (torch's state names) of each optimizer kind.
BUFFERS = {
    "sgd": set(),
    "momentum": {"momentum_buffer"},
    "nesterov": {"momentum_buffer"},
    "rmsprop": {"square_avg"},
    "adam": {"exp_avg", "exp_avg_sq"},
    "adamw": {"exp_avg", "exp_avg_sq"},
}


def mixed_member(variant: str, j: int, d: dict[str, torch.Tensor]) -> Classifier:
    optimizer, scheduler, k = MIXED[j]
    return member(variant, optimizer, scheduler, k, d["x"], seed=j)


def check_mixed(
    variant: str, trainer: L.Trainer, leave: dict[int, list[int]] | None
) -> StackedOptimizer:
    """Every member still in the population after `leave` matches the same model alone."""
    d = data(VARIANTS[variant][1])
    stack = StackedModels([mixed_member(variant, j, d) for j in range(len(MIXED))])
    opt = train_population(stack, d, leave)
    rows = list(range(len(MIXED)))
    for index in (leave or {}).values():
        rows = [rows[i] for i in index]
    assert opt.kinds == [MIXED[j][0] for j in rows]
    for row, j in enumerate(rows):
        model = mixed_member(variant, j, d)
        clipped, lr = train_alone(model, d, trainer)
        noise = NOISE_DRIVEN.get(variant, set())
        assert_same(stack.member_state_dict(row), model.state_dict(), noise, j)
        assert opt.lr[row].item() == lr, f"member {j}: lr {opt.lr[row].item()} vs {lr}"
        assert clipped > 0 or not model.hp.grad_clip, f"member {j} never clipped"
    for name, buffers in opt.state.items():
        for key, value in buffers.items():
            for row, j in enumerate(rows):  # a member's rows of other rules' buffers stay 0
                if key not in BUFFERS[MIXED[j][0]]:
                    assert not value[row].any(), f"member {j} {name} {key} was written"
    return opt


@pytest.mark.parametrize("variant", ["fnn-bn", pytest.param("cnn", marks=pytest.mark.slow)])
def test_mixed_kinds_train_as_alone(variant: str, cosine_trainer: L.Trainer) -> None:
    """All six optimizer kinds and five scheduler kinds in one population."""
    check_mixed(variant, cosine_trainer, None)


def test_mixed_members_leave(cosine_trainer: L.Trainer) -> None:
    """Members leave in two waves (reordering the rows); the last two share adam's rule, so the
    population ends on the one-rule path with only adam's buffers, and still matches."""
    leave = {40: [5, 2, 4, 7, 9, 1], 70: [4, 0, 3]}  # -> adamw, adam, adamw (j = 9, 5, 7)
    opt = check_mixed("fnn-bn", cosine_trainer, leave)
    assert list(opt.rules) == ["adam"]
    assert {k for s in opt.state.values() for k in s} == {"exp_avg", "exp_avg_sq"}


PLATEAU_MIX = (("sgd", "step"), ("adam", "plateau"), ("rmsprop", "none"))


def test_plateau_members_need_val_loss() -> None:
    """A population without plateau members steps without losses; with one, it needs K."""
    d = data(VARIANTS["fnn"][1])
    models = [member("fnn", o, s, 0, d["x"], seed=j) for j, (o, s) in enumerate(PLATEAU_MIX)]
    stack = StackedModels(models)
    schedulers = MemberSchedulers(stack, StackedOptimizer(stack), max_epochs=MAX_EPOCHS)
    with pytest.raises(ValueError, match=r"scheduler='plateau' \(members \[1\]\) needs val_loss"):
        schedulers.step()
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(2,\)"):
        schedulers.step(torch.zeros(2))
    stack.keep([0, 2])
    schedulers.keep([0, 2])
    schedulers.step()  # step and none only: no loss needed
    assert schedulers.kinds == ["step", "none"]


def population_grads(
    stack: StackedModels, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each member's gradient of its own loss (CE + penalty), as `PopulationModule` takes it."""
    logits = stack(x)  # (K, B, C)
    ce = F.cross_entropy(logits.transpose(1, 2), y.expand(stack.size, -1), reduction="none")
    names = list(stack.params)
    loss = ce.mean(dim=1).sum()  # (K, B) -> (K,) -> ()
    raw = torch.autograd.grad(loss, [stack.params[n] for n in names])
    return stack.add_penalty(dict(zip(names, raw, strict=True)))


def test_mixed_members_sit_out_a_step() -> None:
    """In a mixed population, members left out of a step (`active`) keep their parameters and
    state exactly, while the others take exactly the step they take without a mask; members of
    another rule keep their rows of a rule's buffers at 0. The left-out members include every
    member of one rule (rmsprop), and the active ones every other rule, decay and clipping."""
    d = data(VARIANTS["fnn"][1])
    stacks = [StackedModels([mixed_member("fnn", j, d) for j in range(len(MIXED))]) for _ in "ab"]
    opts = [StackedOptimizer(s) for s in stacks]
    for _, x, y in itertools.islice(batches(d), 5):  # both alike: every rule has state
        for stack, opt in zip(stacks, opts, strict=True):
            opt.step(population_grads(stack, x, y))
    (masked, full), (opt, opt_full) = stacks, opts
    before = {n: p.detach().clone() for n, p in masked.params.items()}
    state = {n: {k: t.clone() for k, t in s.items()} for n, s in opt.state.items()}
    out = {1, 3, 4, 8}  # momentum, rmsprop (its only member), adam, sgd
    active = torch.tensor([j not in out for j in range(len(MIXED))])
    grads = population_grads(masked, d["x"][:8], d["y"][:8])
    opt.step(grads, active=active)
    opt_full.step(grads)
    assert opt.steps.tolist() == [5.0 if j in out else 6.0 for j in range(len(MIXED))]
    moved = False
    for n, p in masked.params.items():
        assert torch.equal(p[~active], before[n][~active]), n
        assert torch.equal(p[active], full.params[n][active]), n
        moved |= not torch.equal(p[active], before[n][active])
    assert moved, "no active member moved"
    for n, buffers in opt.state.items():
        for key, value in buffers.items():
            assert torch.equal(value[~active], state[n][key][~active]), (n, key)
            assert torch.equal(value[active], opt_full.state[n][key][active]), (n, key)
            for j, (kind, _, _) in enumerate(MIXED):
                if key not in BUFFERS[kind]:
                    assert not value[j].any(), f"member {j} {n} {key} was written"


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_members_sharing_adam_step_fused_and_train_as_alone(
    scheduler: str, cosine_trainer: L.Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adam members with one learning rate, betas and eps (each its own seed, penalty, decay
    and clip) step through torch's fused Adam, and train as alone. With `cosine` their rates
    part after the first epoch (each its own min_lr): the population moves to the per-member
    rule on the same state and still trains as alone."""
    fused_steps = []

    def counted(*args: Any, **kwargs: Any) -> None:
        fused_steps.append(kwargs["fused"])
        optim_module.adam(*args, **kwargs)

    monkeypatch.setattr(optim, "adam", counted)
    variant = "fnn"
    d = data(VARIANTS[variant][1])
    shared = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}

    def build(k: int) -> Classifier:
        return member(variant, "adam", scheduler, k, d["x"], shared=shared)

    stack = StackedModels([build(k) for k in range(3)])
    train_population(stack, d)
    assert fused_steps == [True] * (STEPS if scheduler == "none" else EPOCH)
    for k in range(3):
        model = build(k)
        train_alone(model, d, cosine_trainer)
        assert_same(stack.member_state_dict(k), model.state_dict(), set(), k)
