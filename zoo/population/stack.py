"""K zoo models of one architecture as one batched model: stacked tensors and `torch.func.vmap`.

Each member keeps its own parameters, buffers (batchnorm running statistics, the input
pipeline's statistics) and dropout rate, stacked along a leading member axis of size K. One
functional copy of the network runs them all under `vmap(functional_call)`, with
`randomness="different"` so that every member draws its own dropout masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from regzoo.zoo.classifier import Classifier

# What members may differ in: the training knobs. Everything else (optimizer and scheduler
# kind, decay_bias, architecture, normalize, ...) must agree, since one network and one
# update rule serve them all.
MEMBER_HPARAMS: frozenset[str] = frozenset(
    {
        "lr",
        "momentum",
        "betas",
        "eps",
        "alpha",
        "weight_decay",
        "l1",
        "l2",
        "grad_clip",
        "dropout",
        "init",
        "init_std",
        "init_range",
        "init_value",
        "step_size",
        "gamma",
        "milestones",
        "lr_values",
        "min_lr",
        "plateau_patience",
    }
)


class PopulationError(ValueError):
    """Models that cannot be trained as one population; the message names the offending key."""


class MemberDropout(nn.Module):
    """Dropout whose rate is a buffer, so that each member of a stack has its own.

    The mask is computed without Python control flow on `p` (vmap sees one graph); `p = 0`
    keeps every unit and divides by 1, so it returns `x` exactly.
    """

    p: Tensor

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1 - self.p)


class _Network(nn.Module):
    """A member's forward pass, `net(pipeline(x))`, with `Classifier`'s state-dict names."""

    def __init__(self, pipeline: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.pipeline, self.net = pipeline, net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.pipeline(x))  # (B, *raw_shape) -> (B, num_classes)


def _tensors(model: Classifier) -> tuple[list[tuple[str, Tensor]], list[tuple[str, Tensor]]]:
    """The parameters and buffers a member's forward pass reads, in module order."""
    net = _Network(model.pipeline, model.net)
    return list(net.named_parameters()), list(net.named_buffers())


# torch's dropout layers (their private base class is `_DropoutNd`).
DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def _dropouts(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, DROPOUTS)]


def check_compatible(models: Sequence[Classifier]) -> None:
    """Raise `PopulationError` unless `models` can be stacked into one population.

    They must be of one class (not `rnn`), agree on every hparam outside `MEMBER_HPARAMS` and
    have parameters and buffers of equal shapes and dtypes in the same order.
    """
    if not models:
        raise PopulationError("a population needs at least one model")
    first = models[0]
    if any(isinstance(m, nn.RNNBase) for m in first.modules()):
        raise PopulationError(
            "rnn cannot be batched: torch.func.vmap has no batching rule for nn.GRU/nn.LSTM"
        )
    for i, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise PopulationError(
                f"model: member {i} is {type(model).__name__}, member 0 {type(first).__name__}"
            )
        for key in sorted(set(first.hparams) | set(model.hparams)):
            a, b = first.hparams.get(key), model.hparams.get(key)
            if key not in MEMBER_HPARAMS and a != b:
                raise PopulationError(
                    f"hparam {key!r} differs: {a!r} (member 0) vs {b!r} (member {i}); members "
                    f"may differ only in {', '.join(sorted(MEMBER_HPARAMS))}"
                )
        _check_tensors(first, model, i)
    _check_dropouts(models)


def _check_tensors(first: Classifier, model: Classifier, i: int) -> None:
    pairs = zip(("parameters", "buffers"), _tensors(first), _tensors(model), strict=True)
    for kind, mine, theirs in pairs:
        if len(mine) != len(theirs):
            raise PopulationError(f"{kind}: member {i} has {len(theirs)}, member 0 {len(mine)}")
        for (name, a), (other, b) in zip(mine, theirs, strict=True):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise PopulationError(
                    f"{other!r} of member {i} is {b.dtype} {tuple(b.shape)}, {name!r} of member "
                    f"0 {a.dtype} {tuple(a.shape)}"
                )


def _check_dropouts(models: Sequence[Classifier]) -> None:
    """Dropout layers are plain nn.Dropout, and as many in every member that has any."""
    for module in _dropouts(models[0].net):
        if type(module) is not nn.Dropout:
            raise PopulationError(f"{type(module).__name__}: only nn.Dropout can be batched")
    counts = [len(_dropouts(m.net)) for m in models]
    if len(set(counts) - {0}) > 1:
        raise PopulationError(f"dropout: members have different numbers of dropout layers {counts}")


class StackedModels:
    """K compatible `Classifier`s as stacked tensors and one functional network.

    Args:
        models: Built models (own seed, own init), their input pipelines already fitted.

    Example:
        >>> from regzoo.zoo import create_model
        >>> models = [create_model("fnn", input_shape=(4,), num_classes=3, hidden=(5,), lr=lr)
        ...           for lr in (0.1, 0.01)]
        >>> stack = StackedModels(models)
        >>> stack(torch.zeros(8, 4)).shape
        torch.Size([2, 8, 3])
    """

    def __init__(self, models: Sequence[Classifier]) -> None:
        check_compatible(models)
        # Structure from a member with dropout layers: fnn adds them only when dropout > 0.
        template = max(models, key=lambda m: len(_dropouts(m.net)))
        self._base = _functional_base(template)
        self._dropout_names = [
            f"{name}.p" for name, m in self._base.named_modules() if isinstance(m, MemberDropout)
        ]
        self.hparams: list[dict[str, Any]] = [dict(m.hparams) for m in models]
        self.params, self.buffers, self._keys = _stack(models, self._base, self._dropout_names)
        self._values: dict[tuple[str, Any], Tensor] = {}  # member_values' cache
        decay_bias = bool(self.hparams[0].get("decay_bias", False))
        self.penalized: frozenset[str] = frozenset(
            n
            for n, p in self.params.items()
            if n.startswith("net.") and (decay_bias or p.ndim - 1 >= 2)
        )
        self._call: Callable[..., Tensor] = vmap(
            self._member_forward, in_dims=(0, 0, None), randomness="different"
        )
        self._call_each: Callable[..., Tensor] = vmap(
            self._member_forward, in_dims=(0, 0, 0), randomness="different"
        )

    @property
    def size(self) -> int:
        """The current number of members K."""
        return len(self.hparams)

    @property
    def training(self) -> bool:
        return self._base.training

    def _member_forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor
    ) -> Tensor:
        return functional_call(self._base, (params, buffers), (x,))

    def train(self, mode: bool = True) -> StackedModels:
        self._base.train(mode)
        return self

    def eval(self) -> StackedModels:
        return self.train(False)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> StackedModels:
        """Move every tensor; floating ones take `dtype`. Parameters stay leaves with grads."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        self.params = {n: move(p.detach()).requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: move(b) for n, b in self.buffers.items()}
        self._base.to(device=device, dtype=dtype)
        return self

    def forward(self, x: Tensor, *, per_member: bool = False) -> Tensor:
        """Logits of raw inputs through each member's pipeline and network.

        Args:
            x: `(B, *raw_shape)` shared by all members, or `(K, B, *raw_shape)` with
                `per_member=True`.

        Returns:
            `(K, B, num_classes)` logits. In training mode batchnorm running statistics update
            per member, in place in `buffers`.
        """
        call = self._call_each if per_member else self._call
        return call(self.params, self.buffers, x)  # -> (K, B, num_classes)

    __call__ = forward

    def member_values(self, key: str, *, like: Tensor | None = None) -> Tensor:
        """One hparam of every member as a `(K,)` tensor: float64, or `like`'s dtype and device
        (cached, so that a training step copies nothing to the device)."""
        spec = (key, None if like is None else (like.device, like.dtype))
        if spec not in self._values:
            values = torch.tensor([float(h[key]) for h in self.hparams], dtype=torch.float64)
            self._values[spec] = values if like is None else values.to(like)
        return self._values[spec]

    def penalty(self) -> Tensor:
        """`(K,)`: l1ₖ·Σ|w| + (l2ₖ/2)·Σw² over `penalized`, as `Classifier.penalty`."""
        first = next(iter(self.params.values()))
        l1, l2 = self.member_values("l1", like=first), self.member_values("l2", like=first)
        total = torch.zeros(self.size, dtype=first.dtype, device=first.device)  # (K,)
        for name in self.params:
            if name in self.penalized:
                w = self.params[name].flatten(1)  # (K, *shape) -> (K, n)
                total = total + l1 * w.abs().sum(1) + 0.5 * l2 * w.pow(2).sum(1)
        return total

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict with its own model's keys: detached clones on the cpu."""
        stacked = self.params | self.buffers
        return {own: stacked[n][k].detach().clone().cpu() for own, n in self._keys[k]}

    def load_into(self, k: int, model: Classifier) -> Classifier:
        """Copy member k into `model`, built with member k's hparams (strict loading)."""
        model.load_state_dict(self.member_state_dict(k), strict=True)
        return model

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (parameters become new leaf tensors)."""
        first = next(iter(self.params.values()))
        idx = torch.as_tensor(list(index), dtype=torch.long, device=first.device)
        self.params = {n: p.detach()[idx].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        self.hparams = [self.hparams[i] for i in index]
        self._keys = [self._keys[i] for i in index]
        self._values.clear()


def _stack(
    models: Sequence[Classifier], base: nn.Module, dropout_names: list[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[list[tuple[str, str]]]]:
    """Members' tensors stacked under the base's names, matched by position (check_compatible
    guarantees equal order and shapes), and each member's (own key, stacked name) pairs."""
    base_params = [n for n, _ in base.named_parameters()]
    base_buffers = [n for n, _ in base.named_buffers() if n not in dropout_names]
    params: dict[str, list[Tensor]] = {n: [] for n in base_params}
    buffers: dict[str, list[Tensor]] = {n: [] for n in base_buffers + dropout_names}
    keys: list[list[tuple[str, str]]] = []
    for model in models:
        own_params, own_buffers = _tensors(model)
        names: dict[str, str] = {}
        for own, stacked, base_names in (
            (own_params, params, base_params),
            (own_buffers, buffers, base_buffers),
        ):
            for (own_name, t), name in zip(own, base_names, strict=True):
                stacked[name].append(t.detach())
                names[own_name] = name
        dtype = own_params[0][1].dtype
        rates = _member_rates(model, len(dropout_names))
        for name, p in zip(dropout_names, rates, strict=True):
            buffers[name].append(torch.tensor(p, dtype=dtype))
        keys.append([(k, names[k]) for k in model.state_dict()])
    stacked_params = {n: torch.stack(ts).requires_grad_() for n, ts in params.items()}
    stacked_buffers = {n: torch.stack(ts) for n, ts in buffers.items()}  # name -> (K, *shape)
    return stacked_params, stacked_buffers, keys


def _functional_base(template: Classifier) -> _Network:
    """A copy of the template's network whose dropout layers read their rate from a buffer."""
    base = _Network(copy.deepcopy(template.pipeline), copy.deepcopy(template.net))
    for module in list(base.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, MemberDropout(child.p))
    return base


def _member_rates(model: Classifier, count: int) -> list[float]:
    """Each dropout layer's rate in the base's order; 0 for a member built without them."""
    own = _dropouts(model.net)
    return [float(cast(float, m.p)) for m in own] if own else [0.0] * count
