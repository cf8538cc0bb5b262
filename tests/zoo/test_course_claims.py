"""The lecture's claims (lecture 4, deep learning), each checked on zoo models so it could fail.

- L2 under plain SGD is weight decay; under Adam it is not.
- A network initialized to zeros cannot train its hidden layers.
- The backpropagation formulas of the two-hidden-layer ReLU/softmax FNN are autograd's.
- Two ReLU hidden units (no biases) solve XOR; softmax regression cannot.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.zoo import Classifier, create_model
from tests.zoo.helpers import TRAIN_ONLY, Trajectory, accuracy, learnable_data, loader, trainer

pytestmark = TRAIN_ONLY  # fits without validation data

# ---- L2 penalty vs decoupled weight decay -------------------------------------------------


def trajectory(**training: Any) -> list[dict[str, torch.Tensor]]:
    """Every parameter after every step of 3 epochs, from the same init and batch order."""
    L.seed_everything(0, verbose=False)
    model = create_model("fnn", input_shape=(5,), num_classes=3, hidden=(16,), **training)
    record = Trajectory()
    record.steps.append({n: p.detach().clone() for n, p in model.named_parameters()})
    trainer(max_epochs=3, callbacks=[record]).fit(model, loader(*learnable_data((5,))))
    return record.steps


def largest_gap(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> float:
    assert len(a) == len(b) == 10  # the start and 9 steps
    return max((sa[n] - sb[n]).abs().max().item() for sa, sb in zip(a, b, strict=True) for n in sa)


def test_l2_under_plain_sgd_is_weight_decay() -> None:
    # The lecture writes decay as θ ← (1 − λ')θ − ηg; the zoo's λ' = η·λ, so l2=λ matches
    # weight_decay=λ whatever the learning rate.
    lam, sgd = 0.1, {"optimizer": "sgd", "lr": 0.5}
    penalized = trajectory(l2=lam, **sgd)
    decayed = trajectory(weight_decay=lam, **sgd)
    for p, d in zip(penalized, decayed, strict=True):
        for name in p:
            torch.testing.assert_close(d[name], p[name], rtol=1e-5, atol=1e-6, msg=name)
    assert largest_gap(penalized, trajectory(**sgd)) > 1e-2  # the penalty did change the path


def test_l2_under_adam_is_not_weight_decay() -> None:
    lam, adam = 0.1, {"optimizer": "adam", "lr": 0.05}
    gap = largest_gap(trajectory(l2=lam, **adam), trajectory(weight_decay=lam, **adam))
    assert gap > 1e-3


def test_adam_with_decoupled_decay_is_adamw() -> None:
    lam = 0.1
    ours = trajectory(optimizer="adam", lr=0.05, weight_decay=lam)
    torchs = trajectory(optimizer="adamw", lr=0.05, weight_decay=lam)
    assert largest_gap(ours, torchs) < 1e-6


# ---- zero initialization ------------------------------------------------------------------


def train_fnn(init: str) -> tuple[Classifier, dict[str, torch.Tensor]]:
    L.seed_everything(0, verbose=False)
    model = create_model(
        "fnn", input_shape=(5,), num_classes=3, hidden=(16, 8), init=init, optimizer="adam",
        lr=0.05,
    )  # fmt: skip
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(max_epochs=2).fit(model, loader(*learnable_data((5,))))
    return model, start


def hidden_layers(model: Classifier) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


def test_zero_init_leaves_the_hidden_layers_exactly_zero() -> None:
    model, _ = train_fnn("zeros")
    for layer in hidden_layers(model):
        assert bool((layer.weight == 0).all()) and bool((layer.bias == 0).all())
    # Training did run: the output bias, whose gradient does not pass through a zero weight,
    # learned the class frequencies.
    output = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert not torch.equal(output.bias, torch.zeros_like(output.bias))


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier", "kaiming"])
def test_random_inits_train_the_hidden_layers(init: str) -> None:
    model, start = train_fnn(init)
    names = {id(p): n for n, p in model.named_parameters()}
    for layer in hidden_layers(model):
        moved = (layer.weight - start[names[id(layer.weight)]]).abs()
        assert moved.max() > 1e-3, f"{init}: a hidden layer did not learn"


# ---- backpropagation formulas -------------------------------------------------------------


def test_the_lectures_backprop_formulas_equal_autograd() -> None:
    m, d, d1, d2, c = 6, 5, 7, 4, 3
    model = create_model("fnn", input_shape=(d,), num_classes=c, hidden=(d1, d2)).double()
    (W1, b1), (W2, b2), (W, b) = [
        (layer.weight.detach(), layer.bias.detach())
        for layer in model.modules()
        if isinstance(layer, nn.Linear)
    ]
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(m, d, generator=gen, dtype=torch.float64)  # (m, d)
    labels = torch.randint(0, c, (m,), generator=gen)
    Y_star = F.one_hot(labels, c).double()  # (m, C)

    # The lecture's forward pass, rows are samples.
    A1 = X @ W1.T + b1  # (m, d1)
    h1 = A1.relu()
    A2 = h1 @ W2.T + b2  # (m, d2)
    h2 = A2.relu()
    Z = h2 @ W.T + b  # (m, C)
    Y = Z.softmax(dim=1)

    # Its backward pass: dL/dZ = (Y − Y*)/m for the batch-mean cross-entropy.
    dZ = (Y - Y_star) / m  # (m, C)
    dW, db = dZ.T @ h2, dZ.sum(0)  # dL/dW = (dL/dZ)ᵀ·h2: (C, d2)
    dh2 = dZ @ W  # dL/dh2 = dL/dZ·W: (m, d2)
    dA2 = dh2 * (A2 > 0)
    dW2, db2 = dA2.T @ h1, dA2.sum(0)  # (d2, d1)
    dh1 = dA2 @ W2  # (m, d1)
    dA1 = dh1 * (A1 > 0)
    dW1, db1 = dA1.T @ X, dA1.sum(0)  # (d1, d)

    # Autograd on the zoo's model, with dL/dh2 taken at the second hidden block's output.
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        captured["h2"] = output

    model.net[2].register_forward_hook(keep)
    logits = model(X)
    torch.testing.assert_close(logits, Z)  # the zoo computes Z = h2·Wᵀ + b
    F.cross_entropy(logits, labels).backward()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    expected = [(dW1, db1), (dW2, db2), (dW, db)]
    for layer, (dweight, dbias) in zip(layers, expected, strict=True):
        torch.testing.assert_close(layer.weight.grad, dweight)
        torch.testing.assert_close(layer.bias.grad, dbias)
    torch.testing.assert_close(captured["h2"].grad, dh2)


# ---- XOR ----------------------------------------------------------------------------------

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2)
XOR_Y = torch.tensor([0, 1, 1, 0])


def xor_net(**training: Any) -> Classifier:
    """The lecture's network: two ReLU hidden units without biases, softmax output."""
    return create_model("fnn", input_shape=(2,), num_classes=2, hidden=(2,), bias=False, **training)


def fit_xor(model: Classifier, steps: int = 100) -> float:
    # One epoch of full-batch steps: Lightning's per-epoch overhead would dominate otherwise.
    data = loader(XOR_X.repeat(steps, 1), XOR_Y.repeat(steps), batch_size=4)
    trainer(max_epochs=1).fit(model, data)
    return accuracy(model, XOR_X, XOR_Y)


def test_the_lectures_hand_set_xor_network_is_exact() -> None:
    # h1 = ReLU(x1 − x2), h2 = ReLU(x2 − x1): the table's h is (0,0), (0,1), (1,0), (0,0);
    # class 1 wins when h1 + h2 > 0.5.
    model = xor_net()
    hidden, output = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        output.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        output.bias.copy_(torch.tensor([0.5, 0.0]))
        h = model.net[1](XOR_X)  # (4, 2) -> (4, 2)
    assert h.tolist() == [[0, 0], [0, 1], [1, 0], [0, 0]]
    assert accuracy(model, XOR_X, XOR_Y) == 1.0


def test_two_relu_units_learn_xor() -> None:
    # Two units can die or pair up the wrong way (most inits do): the claim is that training
    # can find the solution, so seeds are tried in turn until one reaches 100%.
    accuracies = []
    for seed in range(20):
        L.seed_everything(seed, verbose=False)
        accuracies.append(fit_xor(xor_net(optimizer="adam", lr=0.1)))
        if accuracies[-1] == 1.0:
            break
    assert accuracies[-1] == 1.0, f"accuracy per seed: {accuracies}"


def test_softmax_regression_cannot_learn_xor() -> None:
    model = create_model("linear", input_shape=(2,), num_classes=2, optimizer="adam", lr=0.1)
    assert fit_xor(model) <= 0.75
