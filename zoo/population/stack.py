"""K zoo models of one architecture as one batched model: stacked tensors, one forward pass.

Each member keeps its own parameters, buffers (batchnorm running statistics, the input
pipeline's statistics) and dropout rate, stacked along a leading member axis of size K; members
narrower than the widest are zero-padded, their padding masked out of every gradient
(`mask_grads`). `batched.BatchedForward` runs the zoo's layers on the stack with batched
operations; a network with another layer runs one functional copy under `vmap(functional_call)`,
with `randomness="different"` so that every member draws its own dropout masks.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from regzoo.zoo._compat import foreach_addcmul_, foreach_sign
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.population.batched import BatchedForward
from regzoo.zoo.population.dropout import MemberDropout

# What members may differ in: the training knobs, the optimizer and scheduler kinds included
# (StackedOptimizer and MemberSchedulers follow each member's own), and `normalize` within
# `SCALINGS`. Everything else (decay_bias, architecture, ...) must agree, since one network
# serves them all.
MEMBER_HPARAMS: frozenset[str] = frozenset(
    {
        "optimizer",
        "scheduler",
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


# Normalizations that are one elementwise `(x − shift) / scale` on the raw inputs (`none` with
# shift 0 and scale 1, exactly x): members may differ among them, the stack holding every
# member's shift and scale. `pca` (a projection) is shared by all members or by none.
SCALINGS = frozenset({"none", "minmax", "standard"})
PIPELINE = "pipeline."  # the state-dict prefix of a model's input pipeline
IDENTITY = {"shift": 0.0, "scale": 1.0}  # a `none` member's row of a scaling stack


class PopulationError(ValueError):
    """Models that cannot be trained as one population; the message names the offending key."""


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


# Layers torch.func.vmap has no batching rule for, nor a fallback (torch 2.13: aten::rnn_tanh,
# gru, lstm and lstm_cell; GRUCell and RNNCell run, member by member, through its slow fallback),
# and that `batched.py` does not batch either. tests/zoo/test_population_stack.py checks the
# list against vmap.
UNBATCHABLE: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.LSTMCell)


def batch_refusal(model: nn.Module) -> str | None:
    """Why `model` cannot train as a member of a population (one line), or None when it can.

    Decided from its layers, whatever the model is called: a recurrent layer of `UNBATCHABLE`
    has no batching rule in `torch.func.vmap`, and a dropout layer other than plain
    `nn.Dropout` would keep one rate for all members (`MemberDropout` replaces only
    `nn.Dropout`). Any other layer is batched: by `batched.BatchedForward` where it knows the
    layer, else by vmap.

    Example:
        >>> batch_refusal(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))) is None
        True
        >>> batch_refusal(nn.Sequential(nn.Linear(4, 8), nn.GRU(8, 8)))
        "its layer '1' (GRU) has no batching rule in torch.func.vmap"
    """
    for name, module in model.named_modules():
        if isinstance(module, UNBATCHABLE):
            why = "has no batching rule in torch.func.vmap"
        elif isinstance(module, DROPOUTS) and type(module) is not nn.Dropout:
            why = "cannot take a rate per member (only nn.Dropout can)"
        else:
            continue
        layer = f"its layer {name!r}" if name else "the model"
        return f"{layer} ({type(module).__name__}) {why}"
    return None


# Architecture hparams whose widths may differ between members, but not their length (the
# depth): `_stack` zero-pads every tensor to the widest member, which keeps each member exactly
# its own network, whereas another depth is another network. Value: what the entries count.
WIDTH_HPARAMS: dict[str, str] = {"hidden": "hidden layers", "channels": "conv blocks"}


def check_compatible(models: Sequence[Classifier]) -> None:
    """Raise `PopulationError` unless `models` can be stacked into one population.

    They must be of one class whose layers can be batched (`batch_refusal`), agree on every
    hparam outside `MEMBER_HPARAMS` (`WIDTH_HPARAMS` may differ in widths, not in length) and
    have parameters and buffers of equal dtypes and dimensions in the same order; shapes may
    differ only inside the network.
    """
    if not models:
        raise PopulationError("a population needs at least one model")
    first = models[0]
    refusal = batch_refusal(first)
    if refusal is not None:
        name = getattr(first, "model_name", type(first).__name__)
        raise PopulationError(f"{name} cannot be batched: {refusal}")
    for i, model in enumerate(models):  # the stack's forward has no temperature
        if model.hparams.get("temperature", 1.0) != 1.0:
            raise PopulationError(
                f"member {i}: temperature={model.hparams['temperature']!r} is a calibration "
                "fitted after training; a population trains with temperature 1"
            )
    for i, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise PopulationError(
                f"model: member {i} is {type(model).__name__}, member 0 {type(first).__name__}"
            )
        for key in sorted(set(first.hparams) | set(model.hparams)):
            a, b = first.hparams.get(key), model.hparams.get(key)
            if key in MEMBER_HPARAMS or a == b or (key == "normalize" and {a, b} <= SCALINGS):
                continue
            if key in WIDTH_HPARAMS:
                _check_depth(key, a, b, i)
                continue
            raise PopulationError(
                f"hparam {key!r} differs: {a!r} (member 0) vs {b!r} (member {i}); members "
                f"may differ only in {', '.join(sorted(MEMBER_HPARAMS))}, in normalize among "
                f"{', '.join(sorted(SCALINGS))}, and in the widths (not the number) of "
                f"{' and '.join(WIDTH_HPARAMS)}"
            )
        _check_tensors(first, model, i)
    _check_dropouts(models)


def _check_depth(key: str, a: Any, b: Any, i: int) -> None:
    """Widths may differ (zero padding), the number of layers may not (another network)."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b):
        return
    depth_a = len(a) if isinstance(a, tuple | list) else a
    depth_b = len(b) if isinstance(b, tuple | list) else b
    raise PopulationError(
        f"hparam {key!r} (model.{key}): members have {depth_a} and {depth_b} "
        f"{WIDTH_HPARAMS[key]} ({a!r} in member 0, {b!r} in member {i}); members of one "
        "population may differ in widths, not depth"
    )


def _check_tensors(first: Classifier, model: Classifier, i: int) -> None:
    """Tensors pair up by position with equal dtypes and dimensions. Sizes may differ in the
    network (widths, padded by `_stack`); the input pipeline's statistics must agree, since
    all members read one input, unless their normalizations differ (`SCALINGS`: `_stack`
    pairs those by name)."""
    pairs = zip(("parameters", "buffers"), _tensors(first), _tensors(model), strict=True)
    mixed = first.hparams.get("normalize") != model.hparams.get("normalize")
    for kind, mine, theirs in pairs:
        if mixed:
            mine = [(n, t) for n, t in mine if not n.startswith(PIPELINE)]
            theirs = [(n, t) for n, t in theirs if not n.startswith(PIPELINE)]
        if len(mine) != len(theirs):
            raise PopulationError(f"{kind}: member {i} has {len(theirs)}, member 0 {len(mine)}")
        for (name, a), (other, b) in zip(mine, theirs, strict=True):
            paddable = name.startswith("net.") and a.ndim == b.ndim
            if a.dtype != b.dtype or (a.shape != b.shape and not paddable):
                raise PopulationError(
                    f"{other!r} of member {i} is {b.dtype} {tuple(b.shape)}, {name!r} of member "
                    f"0 {a.dtype} {tuple(a.shape)}; members must share the input shape, "
                    "normalize and the layer types (only the network's widths may differ)"
                )


def _check_dropouts(models: Sequence[Classifier]) -> None:
    """As many dropout layers in every member that has any (`batch_refusal` checked their type)."""
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
        # Structure from a member with dropout layers: fnn adds them only when dropout > 0;
        # the pipeline from one with a shift and scale, where members differ in normalize.
        template = max(models, key=lambda m: len(_dropouts(m.net)))
        scaled = max(models, key=lambda m: len(list(m.pipeline.buffers())))
        self._base = _functional_base(scaled.pipeline, template.net)
        self._dropout_names = [
            f"{name}.p" for name, m in self._base.named_modules() if isinstance(m, MemberDropout)
        ]
        self.hparams: list[dict[str, Any]] = [dict(m.hparams) for m in models]
        self.params, self.buffers, self._keys = _stack(models, self._base, self._dropout_names)
        self._values: dict[tuple[str, Any], Tensor] = {}  # member_values' cache
        # load_into's targets: each model's state-dict tensors, copied into in place.
        self._targets: weakref.WeakKeyDictionary[nn.Module, dict[str, Tensor]] = (
            weakref.WeakKeyDictionary()
        )
        decay_bias = bool(self.hparams[0].get("decay_bias", False))
        self.penalized: frozenset[str] = frozenset(
            n
            for n, p in self.params.items()
            if n.startswith("net.") and (decay_bias or p.ndim - 1 >= 2)
        )
        # The members' forward as batched ops (batched.py), or None: a module it does not
        # know, then vmap.
        self.batched: BatchedForward | None = BatchedForward.build(
            self._base.pipeline, self._base.net, self.buffers
        )
        self._call: Callable[..., Tensor] = vmap(
            self._member_forward, in_dims=(0, 0, None), randomness="different"
        )
        self._call_each: Callable[..., Tensor] = vmap(
            self._member_forward, in_dims=(0, 0, 0), randomness="different"
        )
        # Members of different widths: each one's own shapes of the padded tensors, and the
        # `(K, *shape)` masks of their real entries (`mask_grads`); both empty when none is.
        self._shapes: list[dict[str, torch.Size]]
        self.masks: dict[str, Tensor]
        self._shapes, self.masks = _padding(models, self._keys, self.params | self.buffers)

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
        if self._base.training != mode:  # twice an epoch: a walk over every submodule
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
            per member, in place in `buffers`. Computed by `batched` where it knows every
            module, else by `vmap(functional_call)`; the two differ only by rounding and by
            the dropout masks they draw (vmap one `(K, B, *f)` tensor per layer, `batched`
            only the rows of members whose rate is above 0, in two streams: `batched.Draws`).
        """
        if self.batched is not None:
            return self.batched(self.params, self.buffers, x, per_member=per_member)
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

    def add_penalty(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each member's penalty gradient added, in place, to its gradients over `penalized`:
        `∂/∂w [l1ₖ·Σ|w| + (l2ₖ/2)·Σw²] = l1ₖ·sign(w) + l2ₖ·w`, what autograd gives
        `Classifier.penalty` (`(0.5·l2)·(2·w)` is `l2·w` exactly). By hand, since the penalty's
        value is never read: its forward and backward through autograd took a third of a
        population step (broadcast `(K, 1)` gradients, a `sgn` pass per step for an `l1` of 0).

        Args:
            grads: name -> `(K, *shape)` gradient of the members' losses without the penalty,
                as `torch.autograd.grad` returns them; a missing name is skipped.

        Returns:
            `grads`, its penalized tensors updated in place (a padded entry stays 0: its weight
            is 0).
        """
        names = [n for n in self.params if n in self.penalized and grads.get(n) is not None]
        if not names:
            return grads
        gs = [grads[n] for n in names]
        ws = [self.params[n].detach() for n in names]
        for key, term in (("l2", ws), ("l1", None)):
            if not any(h.get(key) for h in self.hparams):  # no member has it: nothing to add
                continue
            strength = self.member_values(key, like=gs[0])  # (K,)
            rows = {w.ndim: strength.view(-1, *[1] * (w.ndim - 1)) for w in ws}
            factors = term if term is not None else foreach_sign(ws)
            foreach_addcmul_(gs, factors, [rows[w.ndim] for w in ws])
        return grads

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict with its own model's keys and shapes (padding sliced away):
        detached clones on the cpu."""
        stacked, shapes = self.params | self.buffers, self._shapes[k]
        out = {}
        for own, n in self._keys[k]:
            t = stacked[n][k].detach()
            if n in shapes:
                t = t[_corner(shapes[n])]
            out[own] = t.clone().cpu()
        return out

    def member_grads(self, k: int) -> dict[str, Tensor]:
        """Member k's parameter gradients under its own model's keys (padding sliced away),
        after a backward pass through the stack."""
        shapes, out = self._shapes[k], {}
        for own, n in self._keys[k]:
            p = self.params.get(n)
            if p is not None and p.grad is not None:
                out[own] = p.grad[k][_corner(shapes[n])] if n in shapes else p.grad[k]
        return out

    def load_into(self, k: int, model: Classifier) -> Classifier:
        """Copy member k into `model`, built with member k's hparams: every key of its state
        dict, shape for shape, as strict loading checks, copied in place (probes read a member
        every epoch; `load_state_dict`'s per-module hooks cost 10x the copy)."""
        stacked, shapes = self.params | self.buffers, self._shapes[k]
        targets = self._targets.get(model)
        if targets is None:  # its tensors, found once (state_dict walks every submodule)
            targets = self._targets[model] = model.state_dict(keep_vars=True)
        keys = self._keys[k]
        if sorted(targets) != sorted(own for own, _ in keys):
            raise RuntimeError(f"member {k}'s keys do not match {type(model).__name__}'s")
        with torch.no_grad():
            for own, n in keys:
                t = stacked[n][k]
                if n in shapes:
                    t = t[_corner(shapes[n])]
                if targets[own].shape != t.shape:
                    raise RuntimeError(
                        f"{own!r}: member {k} has {tuple(t.shape)}, the model "
                        f"{tuple(targets[own].shape)}"
                    )
                targets[own].copy_(t)
        return model

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (parameters become new leaf tensors)."""
        first = next(iter(self.params.values()))
        idx = torch.as_tensor(list(index), dtype=torch.long, device=first.device)
        self.params = {n: p.detach()[idx].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        self.hparams = [self.hparams[i] for i in index]
        self._keys = [self._keys[i] for i in index]
        self._shapes = [self._shapes[i] for i in index]
        self.masks = {n: m[idx.to(m.device)] for n, m in self.masks.items()}
        self._values.clear()

    def mask_grads(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """The gradients with padded entries set to 0 (`grads` itself when none is padded).

        Padded entries start at 0, and with a 0 gradient every update keeps them there: decay
        scales 0, momentum and Adam's moments stay 0 (0 / (√0 + ε) = 0), L1's sign(0) is 0 and
        clipping scales 0. So each member computes exactly its own network, whatever the
        activation's value at 0 (a padded unit's output meets only zero weights), and its norm
        for clipping is its own. `where`, not a product: a diverged member's NaN gradient must
        not reach its padding.

        Args:
            grads: name -> `(K, *shape)` gradient, as `StackedOptimizer.step` takes them.
        """
        if not self.masks:
            return grads
        out = dict(grads)
        for name, mask in self.masks.items():
            g = out.get(name)
            if g is None:
                continue
            if mask.device != g.device:  # once, after `to`
                mask = self.masks[name] = mask.to(g.device)
            out[name] = g.where(mask, 0.0)
        return out


def _stack(
    models: Sequence[Classifier], base: nn.Module, dropout_names: list[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[list[tuple[str, str]]]]:
    """Members' tensors stacked under the base's names, matched by position (check_compatible
    guarantees equal order and dimensions), and each member's (own key, stacked name) pairs.
    Members of different widths are zero-padded to the widest (`_pad_stack`)."""
    base_params = [n for n, _ in base.named_parameters()]
    base_buffers = [n for n, _ in base.named_buffers() if n not in dropout_names]
    base_net = [n for n in base_buffers if not n.startswith(PIPELINE)]
    base_pipeline = {n: t for n, t in base.named_buffers() if n.startswith(PIPELINE)}
    params: dict[str, list[Tensor]] = {n: [] for n in base_params}
    buffers: dict[str, list[Tensor]] = {n: [] for n in base_buffers + dropout_names}
    keys: list[list[tuple[str, str]]] = []
    for model in models:
        own_params, own_buffers = _tensors(model)
        names: dict[str, str] = {}
        own_net = [(n, t) for n, t in own_buffers if not n.startswith(PIPELINE)]
        for own, stacked, base_names in (
            (own_params, params, base_params),
            (own_net, buffers, base_net),
        ):
            for (own_name, t), name in zip(own, base_names, strict=True):
                stacked[name].append(t.detach())
                names[own_name] = name
        # The pipeline's by name: a `none` member among scaled ones has no shift nor scale.
        own_pipeline = {n: t for n, t in own_buffers if n.startswith(PIPELINE)}
        for name, like in base_pipeline.items():
            if name in own_pipeline:
                names[name] = name
                buffers[name].append(own_pipeline[name].detach())
            else:
                buffers[name].append(torch.full_like(like, IDENTITY[name.removeprefix(PIPELINE)]))
        dtype = own_params[0][1].dtype
        rates = _member_rates(model, len(dropout_names))
        for name, p in zip(dropout_names, rates, strict=True):
            buffers[name].append(torch.tensor(p, dtype=dtype))
        keys.append([(k, names[k]) for k in model.state_dict()])
    stacked_params = {n: _pad_stack(ts).requires_grad_() for n, ts in params.items()}
    stacked_buffers = {n: _pad_stack(ts) for n, ts in buffers.items()}  # name -> (K, *shape)
    return stacked_params, stacked_buffers, keys


def _pad_stack(tensors: Sequence[Tensor]) -> Tensor:
    """`(K, *max_shape)`: each tensor in the leading corner of zeros, the largest size per dim.

    A member's entries keep their indices, which is what each layer needs: units and channels
    are the leading ones, and the flattened conv features of a member with fewer channels are
    the leading `C_k·H·W` of the `C_max·H·W` (channel-major flatten, padded channels last), so
    the first head layer's weight is padded by trailing columns like any other.
    """
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(list(tensors))
    shape = tuple(max(sizes) for sizes in zip(*shapes, strict=True))
    out = tensors[0].new_zeros((len(tensors), *shape))
    for k, t in enumerate(tensors):
        out[k][_corner(t.shape)] = t
    return out


def _corner(shape: Sequence[int]) -> tuple[slice, ...]:
    """The index of a member's own entries in its padded tensor."""
    return tuple(slice(0, size) for size in shape)


def _padding(
    models: Sequence[Classifier], keys: list[list[tuple[str, str]]], stacked: dict[str, Tensor]
) -> tuple[list[dict[str, torch.Size]], dict[str, Tensor]]:
    """Per member, the own shape of each padded stacked tensor; per padded name, the `(K,
    *shape)` bool mask of the members' real entries. Both empty when no member is padded."""
    shapes: list[dict[str, torch.Size]] = []
    padded: set[str] = set()
    for model, pairs in zip(models, keys, strict=True):
        state = model.state_dict()
        own = {name: state[key].shape for key, name in pairs}
        shapes.append(own)
        padded |= {name for name, shape in own.items() if shape != stacked[name].shape[1:]}
    masks: dict[str, Tensor] = {}
    for name in (n for n in stacked if n in padded):
        mask = torch.zeros(stacked[name].shape, dtype=torch.bool)  # (K, *shape)
        for k, own in enumerate(shapes):
            mask[k][_corner(own[name])] = True
        masks[name] = mask
    return [{n: s for n, s in own.items() if n in padded} for own in shapes], masks


def _functional_base(pipeline: nn.Module, net: nn.Module) -> _Network:
    """A copy of a member's pipeline and network whose dropout layers read their rate from a
    buffer."""
    base = _Network(copy.deepcopy(pipeline), copy.deepcopy(net))
    for module in list(base.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, MemberDropout(child.p))
    return base


def _member_rates(model: Classifier, count: int) -> list[float]:
    """Each dropout layer's rate in the base's order; 0 for a member built without them."""
    own = _dropouts(model.net)
    return [float(cast(float, m.p)) for m in own] if own else [0.0] * count
