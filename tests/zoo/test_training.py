"""Every training knob of the `Classifier` base, checked against its documented formula."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from regzoo.zoo import Classifier, create_model
from tests.zoo.helpers import TRAIN_ONLY, LearningRates, learnable_data, loader, trainer

pytestmark = TRAIN_ONLY  # fits without validation data


def small_fnn(**training: Any) -> Classifier:
    return create_model("fnn", input_shape=(5,), num_classes=3, hidden=(8,), **training)


@pytest.mark.parametrize(
    ("optimizer", "cls", "defaults"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        ("momentum", torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-6}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-6}),
        ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.99), "eps": 1e-6}),
    ],
)
def test_each_optimizer_builds_with_its_settings_and_steps(
    optimizer: str, cls: type[torch.optim.Optimizer], defaults: dict[str, Any]
) -> None:
    model = small_fnn(
        optimizer=optimizer, lr=0.05, momentum=0.8, alpha=0.9, betas=(0.8, 0.99), eps=1e-6
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit = trainer(max_epochs=1)
    fit.fit(model, loader(*learnable_data((5,))))
    opt = fit.optimizers[0]
    assert type(opt) is cls
    assert opt.defaults["lr"] == 0.05
    for key, value in defaults.items():
        assert opt.defaults[key] == value, key
    assert fit.global_step == 3
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not move"


def lrs_per_epoch(epochs: int, validate: bool = False, **training: Any) -> list[float]:
    model = small_fnn(**training)
    record = LearningRates()
    x, y = learnable_data((5,))
    trainer(max_epochs=epochs, callbacks=[record]).fit(
        model, loader(x, y), loader(x, y) if validate else None
    )
    return record.lrs


def test_scheduler_none_keeps_the_learning_rate() -> None:
    assert lrs_per_epoch(3, lr=0.1) == pytest.approx([0.1, 0.1, 0.1])


def test_step_schedule_multiplies_by_gamma_every_step_size_epochs() -> None:
    lrs = lrs_per_epoch(5, lr=0.1, scheduler="step", step_size=2, gamma=0.5)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_schedule_anneals_to_min_lr_over_max_epochs() -> None:
    lrs = lrs_per_epoch(4, lr=0.1, scheduler="cosine", min_lr=0.01)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_cosine_schedule_needs_a_finite_max_epochs() -> None:
    model = small_fnn(scheduler="cosine")
    with pytest.raises(ValueError, match=r"cosine.*max_epochs"):
        trainer(max_epochs=-1, max_steps=2).fit(model, loader(*learnable_data((5,))))
    with pytest.raises(ValueError, match=r"cosine.*max_epochs"):
        model.configure_optimizers()  # no Trainer attached at all


def test_plateau_schedule_cuts_the_rate_when_val_loss_stalls() -> None:
    # An lr this small cannot lower val/loss by the 0.01% ReduceLROnPlateau calls progress.
    lrs = lrs_per_epoch(
        4,
        validate=True,
        optimizer="sgd",
        lr=1e-7,
        scheduler="plateau",
        gamma=0.5,
        plateau_patience=0,
    )
    assert lrs == pytest.approx([1e-7, 1e-7, 5e-8, 2.5e-8])


def test_piecewise_schedule_in_a_real_fit() -> None:
    lrs = lrs_per_epoch(5, scheduler="piecewise", milestones=(2, 4), lr_values=(0.3, 0.05, 0.01))
    assert lrs == pytest.approx([0.3, 0.3, 0.05, 0.05, 0.01])


def test_piecewise_schedule_is_the_lectures_0_3_then_0_05_then_0_01() -> None:
    # The lecture: 0.3 for epochs 1-500, 0.05 for 501-900, 0.01 for 901-1000 (1-based).
    model = small_fnn(scheduler="piecewise", milestones=(500, 900), lr_values=(0.3, 0.05, 0.01))
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:500] == pytest.approx([0.3] * 500)
    assert lrs[500:900] == pytest.approx([0.05] * 400)
    assert lrs[900:] == pytest.approx([0.01] * 100)


@pytest.mark.parametrize(
    ("key", "value"),
    [("milestones", ()), ("milestones", (5, 3)), ("lr_values", (0.3, 0.05))],
)
def test_piecewise_schedule_refuses_inconsistent_segments(key: str, value: object) -> None:
    hparams: dict[str, Any] = {"milestones": (5, 9), "lr_values": (0.3, 0.05, 0.01), key: value}
    with pytest.raises(ValueError, match=f"{key}="):
        small_fnn(scheduler="piecewise", **hparams)


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def test_l1_and_l2_penalties_equal_their_formulas() -> None:
    model = create_model(
        "fnn", input_shape=(5,), num_classes=3, hidden=(8, 4), batchnorm=True, l1=0.01, l2=0.1
    )
    weights = linear_weights(model)  # Linear weight matrices; no biases, no batch-norm scales
    expected = 0.01 * sum(w.abs().sum() for w in weights) + 0.05 * sum(
        w.pow(2).sum() for w in weights
    )
    torch.testing.assert_close(model.penalty(), expected)


def test_decay_bias_puts_biases_and_norm_parameters_under_the_penalty() -> None:
    model = create_model(
        "fnn",
        input_shape=(5,),
        num_classes=3,
        hidden=(8,),
        batchnorm=True,
        l2=0.1,
        decay_bias=True,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-1, 1)
    expected = 0.05 * sum(p.pow(2).sum() for p in model.parameters())
    torch.testing.assert_close(model.penalty(), expected)


def test_biases_are_unpenalized_by_default() -> None:
    model = small_fnn(l1=0.01, l2=0.1)
    before = model.penalty()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.add_(10.0)
    torch.testing.assert_close(model.penalty(), before)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
@pytest.mark.parametrize("decay_bias", [False, True])
def test_decoupled_weight_decay_shrinks_exactly_the_penalized_parameters(
    optimizer: str, decay_bias: bool
) -> None:
    lr, decay = 0.1, 0.5
    model = create_model(
        "fnn",
        input_shape=(5,),
        num_classes=3,
        hidden=(8,),
        batchnorm=True,
        optimizer=optimizer,
        lr=lr,
        weight_decay=decay,
        decay_bias=decay_bias,
        init="normal",
    )
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.0)
            p.grad = torch.zeros_like(p)  # no gradient: whatever moves is the decay
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = model.configure_optimizers()
    model.on_before_optimizer_step(opt)  # the Lightning hook that applies our decay
    opt.step()
    for name, p in model.named_parameters():
        decayed = p.ndim >= 2 or decay_bias
        expected = before[name] * (1 - lr * decay) if decayed else before[name]
        torch.testing.assert_close(p.detach(), expected, msg=name)


def test_grad_clip_bounds_the_global_gradient_norm_of_every_step() -> None:
    lr, clip = 0.1, 0.01
    model = small_fnn(optimizer="sgd", lr=lr, grad_clip=clip)
    norms = ClipProbe()
    trainer(max_epochs=1, callbacks=[norms]).fit(model, loader(*learnable_data((5,))))
    assert len(norms.raw) == len(norms.applied) == 3
    assert all(raw > 10 * clip for raw in norms.raw)  # clipping had work to do
    # Plain SGD moves θ by lr·g: the update's norm shows the gradient actually used.
    assert [a / lr for a in norms.applied] == pytest.approx([clip] * 3, rel=1e-3)


class ClipProbe(L.Callback):
    """Gradient norm before clipping, and the norm of the update the optimizer made."""

    def __init__(self) -> None:
        self.raw: list[float] = []
        self.applied: list[float] = []
        self._before: list[torch.Tensor] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._before = [p.detach().clone() for p in pl_module.parameters()]

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning calls this before it clips.
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.raw.append(torch.cat(grads).norm().item())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        delta = [
            (p.detach() - b).flatten()
            for p, b in zip(pl_module.parameters(), self._before, strict=True)
        ]
        self.applied.append(torch.cat(delta).norm().item())


@pytest.mark.parametrize(
    ("init", "check"),
    [
        ("zeros", lambda w: bool((w == 0).all())),
        ("constant", lambda w: bool((w == 0.3).all())),
        ("uniform", lambda w: bool(w.abs().max() <= 0.2) and w.std() > 0.05),
        ("normal", lambda w: abs(w.std().item() - 0.05) < 0.01),
        ("xavier", lambda w: bool(w.abs().max() <= math.sqrt(6 / sum(w.shape)))),
        ("kaiming", lambda w: abs(w.std().item() - math.sqrt(2 / w.shape[1])) < 0.02),
    ],
)
def test_each_init_scheme_sets_weights_by_its_rule_and_biases_to_zero(
    init: str, check: Any
) -> None:
    model = create_model(
        "fnn",
        input_shape=(256,),
        num_classes=3,
        hidden=(256,),
        init=init,
        init_value=0.3,
        init_range=0.2,
        init_std=0.05,
    )
    first = model.net[1][0]  # the first hidden layer: (256, 256) weights
    assert check(first.weight), init
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert bool((m.bias == 0).all()), f"{init} left a bias nonzero"


def test_default_init_keeps_pytorchs_own() -> None:
    model = small_fnn(init="default")
    assert all(bool((m.bias != 0).any()) for m in model.modules() if isinstance(m, nn.Linear))
