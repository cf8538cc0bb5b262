"""Each member's own torch optimizer, written once on stacked `(K, ...)` tensors.

A step does what Lightning does for one `Classifier`: decoupled decay on the penalized
parameters, clipping of the member's gradients to its global norm `grad_clip`, then the update
rule of `torch.optim` (single-tensor code path). Hyperparameter arithmetic (bias corrections,
step sizes) runs in float64, as torch does it in Python floats, and is cast to the parameters'
dtype only for the elementwise operation: float32 betas alone moved a CNN's parameters by up to
0.17 after 100 steps.

Members may use different optimizer kinds. The kinds fall into four update rules (the decay is
done before the rule, so `adamw` updates as `adam`; `nesterov` is `momentum` with a look-ahead).
A population with one rule runs it on all rows; a mixed one runs each of its rules on all rows
and keeps, per member, its own rule's result (`torch.where`): on tiny models a step costs its
number of operations, not their size, and gathering each rule's rows would add operations.

A population whose members all run Adam with one learning rate, one step count and the same
betas and eps (the seeds of one configuration: `confirm`, `ablate`) steps through torch's own
fused Adam (`torch.optim.adam.adam(fused=True)`), one pass over each parameter instead of the
per-member rule's eleven; it shares the rule's state buffers, so a population moves between the
two when its members' learning rates come apart or together.

For the same reason a step is written as few torch calls as its arithmetic allows: each
elementwise operation runs once over all parameters (`torch._foreach_*`, from `zoo._compat`,
which on the cpu calls the same kernel per tensor, so every value is the one the per-tensor
operation gives),
in place on the parameters and state where no member is left out, and the members'
hyperparameters are broadcast views made once (`_Broadcast`), not per parameter and step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam

from regzoo.zoo._compat import (
    foreach_add_,
    foreach_div_,
    foreach_lerp_,
    foreach_mul,
    foreach_mul_,
    foreach_sqrt,
)
from regzoo.zoo.classifier import OPTIMIZERS
from regzoo.zoo.population.stack import PopulationError, StackedModels

# The update rule of each optimizer kind, and the state buffers (torch's names) of each rule.
RULES: dict[str, str] = {
    "sgd": "sgd",
    "momentum": "momentum",
    "nesterov": "momentum",
    "rmsprop": "rmsprop",
    "adam": "adam",
    "adamw": "adam",
}
BUFFERS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("momentum_buffer",),
    "rmsprop": ("square_avg",),
    "adam": ("exp_avg", "exp_avg_sq"),
}

# Tensors of a step, one per parameter (as `torch._foreach_*` takes and returns them), and
# members' values as one `(K, 1, ..., 1)` view per parameter.
Tensors = tuple[Tensor, ...] | list[Tensor]
Views = list[Tensor]
# What a parameter's views depend on: its dtype, device and number of dimensions.
Spec = tuple[torch.dtype, torch.device, int]


def _rows(values: Tensor, like: Tensor) -> Tensor:
    """(K,) -> (K, 1, ..., 1), broadcasting over (or selecting rows of) a stacked tensor."""
    return values.view(-1, *[1] * (like.ndim - 1))


class _Broadcast:
    """Named rows of members' float64 values, as `(K, 1, ..., 1)` views in each parameter's
    dtype and device.

    The values are cast once per dtype and device into an `(R, K)` tensor, and its views are
    made once per dimension count: new values (the per-step ones) are copied into that same
    tensor, so a step makes no views. The cast is `Tensor.to`'s, as `values.to(dtype)` per
    parameter would do it.
    """

    def __init__(self, values: dict[str, Tensor]) -> None:
        self.names = tuple(values)
        self._values = list(values.values())  # each (K,) float64
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}  # -> (R, K)
        self._lists: dict[tuple[Spec, ...], dict[str, Views]] = {}

    def write(self, values: dict[str, Tensor]) -> None:
        """New values of the same names, each `(K,)` float64."""
        self._values = [values[n] for n in self.names]
        if self._cast:
            # One row is copied as it is (broadcast into (1, K)): a stack less per step.
            new = self._values[0] if len(self._values) == 1 else torch.stack(self._values)
            for cast in self._cast.values():
                cast.copy_(new)

    def lists(self, specs: tuple[Spec, ...]) -> dict[str, Views]:
        """name -> one view per parameter, for parameters of these specs."""
        found = self._lists.get(specs)
        if found is None:
            views = {spec: self._views(*spec) for spec in set(specs)}
            found = {n: [views[spec][i] for spec in specs] for i, n in enumerate(self.names)}
            self._lists[specs] = found
        return found

    def _views(self, dtype: torch.dtype, device: torch.device, ndim: int) -> tuple[Tensor, ...]:
        cast = self._cast.get((dtype, device))
        if cast is None:
            cast = torch.stack(self._values).to(device=device, dtype=dtype)  # a new tensor
            self._cast[(dtype, device)] = cast
        return cast.view(len(self.names), -1, *[1] * (ndim - 1)).unbind(0)


class StackedOptimizer:
    """Each member's own `optimizer` kind and hyperparameters.

    `lr` holds the current learning rates, written through `set_lr` (`MemberSchedulers` calls
    it every epoch, and sets the initial value, which `piecewise` takes from `lr_values`): it
    also keeps the host copy that decides whether the fused Adam may step, so write it there.
    Create it after `StackedModels.to`: the optimizer state is allocated at the first step,
    like the parameters. `state` maps a parameter's name to its buffers, each `(K, ...)`, whose
    rows of members of another update rule stay zero.
    """

    KINDS = OPTIMIZERS

    def __init__(self, stack: StackedModels) -> None:
        self.stack = stack
        self.hparams = list(stack.hparams)
        self.kinds: list[str] = [h["optimizer"] for h in self.hparams]
        for i, kind in enumerate(self.kinds):
            if kind not in self.KINDS:
                raise PopulationError(
                    f"optimizer={kind!r} (member {i}); allowed: {', '.join(self.KINDS)}"
                )
        self.lr: Tensor = self._values(lambda h: h["lr"])  # (K,) float64
        self._lrs: list[float] = [float(h["lr"]) for h in self.hparams]  # `lr`, on the host
        self._count: int | None = 0  # the steps every member has taken; None once they differ
        self._fused_steps: dict[int, list[Tensor]] = {}  # the fused Adam's step tensors, reused
        self.constants: dict[str, Tensor] = {
            "momentum": self._values(lambda h: h["momentum"] if h["optimizer"] != "sgd" else 0.0),
            "beta1": self._values(lambda h: h["betas"][0]),
            "beta2": self._values(lambda h: h["betas"][1]),
            "eps": self._values(lambda h: h["eps"]),
            "alpha": self._values(lambda h: h["alpha"]),
            "weight_decay": self._values(lambda h: h["weight_decay"]),
            "grad_clip": self._values(lambda h: h["grad_clip"]),
        }
        self.steps: Tensor = torch.zeros(len(self.hparams), dtype=torch.float64)  # (K,)
        self.state: dict[str, dict[str, Tensor]] = {}  # param name -> buffer name -> (K, ...)
        self._group(torch.device("cpu"))

    def _values(self, get: Callable[[dict[str, Any]], float]) -> Tensor:
        return torch.tensor([float(get(h)) for h in self.hparams], dtype=torch.float64)

    def _group(self, device: torch.device) -> None:
        """Members by update rule: `rules` maps each rule present to its `(K,)` bool rows, and
        `nesterov` says which `momentum`-rule members look ahead (a bool when they agree, so
        that a one-kind population runs exactly the one-kind code). Also what a step needs of
        the members' constants, made once here (see `_Broadcast`)."""
        rules = [RULES[k] for k in self.kinds]
        self.rules: dict[str, Tensor] = {
            r: torch.tensor([x == r for x in rules], device=device) for r in dict.fromkeys(rules)
        }
        looks = {k == "nesterov" for k in self.kinds if RULES[k] == "momentum"}
        self.nesterov: bool | Tensor = looks == {True}
        if len(looks) > 1:
            self.nesterov = torch.tensor([k == "nesterov" for k in self.kinds], device=device)
        # Zero decay scales by exactly 1 and a zero clip leaves gradients as they are: skipped
        # when no member has any (known without a device sync).
        self._decays = any(h["weight_decay"] for h in self.hparams)
        self._clips = any(h["grad_clip"] for h in self.hparams)
        self._clip_all = all(h["grad_clip"] > 0 for h in self.hparams)
        self._clip_on = self.constants["grad_clip"] > 0  # (K,) bool
        self._clip_cast: dict[torch.dtype, Tensor] = {}  # grad_clip in the gradients' dtype
        c = self.constants
        self._fixed = _Broadcast(
            {
                "momentum": c["momentum"],
                "alpha": c["alpha"],
                "1-alpha": 1 - c["alpha"],
                "beta2": c["beta2"],
                "1-beta2": 1 - c["beta2"],
                "1-beta1": 1 - c["beta1"],
                "eps": c["eps"],
            }
        )
        self._per_step = _Broadcast({n: self.lr for n in self._step_names()})
        # torch's fused Adam takes one value of each hyperparameter: usable while every member
        # shares them (`lr` and the step count are checked at each step).
        shared = {(h["betas"][0], h["betas"][1], h["eps"]) for h in self.hparams}
        self._fusable = set(self.rules) == {"adam"} and len(shared) == 1
        self._selects: dict[tuple[str, int], Tensor] = {}  # (rows' name, ndim) -> view
        self._hyper: dict[tuple[Spec, ...], dict[str, Views]] = {}  # both, by parameter specs

    def set_lr(self, lrs: Sequence[float]) -> None:
        """Each member's learning rate (`MemberSchedulers` writes them every epoch)."""
        self._lrs = [float(v) for v in lrs]
        self.lr = torch.tensor(self._lrs, dtype=torch.float64, device=self.lr.device)

    def _step_names(self) -> list[str]:
        """The per-step values (of `lr` and `steps`) that the rules present read."""
        names = ["-lr"] if set(self.rules) - {"adam"} else []
        names += ["-step_size", "sqrt_bc2"] if "adam" in self.rules else []
        return names + (["decay"] if self._decays else [])

    def _step_values(self) -> dict[str, Tensor]:
        """`_step_names`' values, each `(K,)` float64, as torch computes them in floats."""
        lr, c, out = self.lr, self.constants, {}
        names = self._per_step.names
        if "-lr" in names:
            out["-lr"] = -lr
        if "-step_size" in names:
            bias_correction1 = 1.0 - c["beta1"] ** self.steps  # 1.0: no int to promote
            bias_correction2 = 1.0 - c["beta2"] ** self.steps
            out["-step_size"] = -(lr / bias_correction1)
            out["sqrt_bc2"] = bias_correction2.sqrt()
        if "decay" in names:
            out["decay"] = 1.0 - lr * c["weight_decay"]
        return out

    @torch.no_grad()
    def step(self, grads: dict[str, Tensor], active: Tensor | None = None) -> None:
        """One update of every active member.

        Args:
            grads: name -> `(K, ...)` gradient, like `stack.params`; a missing name is skipped
                (torch skips a parameter without a gradient).
            active: `(K,)` bool; inactive members' parameters and state stay as they are.
        """
        params = self.stack.params
        names = [n for n in params if n in grads and grads[n] is not None]
        if not names:
            return
        self._move(params[names[0]].device)
        mask = None if active is None else active.to(device=self.lr.device, dtype=torch.bool)
        self.steps += 1.0 if mask is None else mask.to(torch.float64)
        count = self._count
        self._count = None if mask is not None or count is None else count + 1
        # Optimizer group order: penalized parameters first (clip_grad_norm_ sums in this order).
        order = [n for n in names if n in self.stack.penalized]
        decayed = len(order)
        order += [n for n in names if n not in self.stack.penalized]
        ps = [params[n] for n in order]
        gs = self._clip([grads[n] for n in order])
        if count is not None and mask is None and self._fusable and len(set(self._lrs)) == 1:
            self._fused_adam(order, ps, gs, decayed, count)
            return
        self._per_step.write(self._step_values())
        specs = tuple((p.dtype, p.device, p.ndim) for p in ps)
        h = self._hyper.get(specs)
        if h is None:
            h = self._hyper[specs] = self._fixed.lists(specs) | self._per_step.lists(specs)
        # The new parameters: in place, or in copies when some members sit this step out.
        new = ps if mask is None else [p.clone() for p in ps]
        if self._decays and decayed:
            foreach_mul_(new[:decayed], h["decay"][:decayed])
        foreach_add_(new, self._update(order, ps, gs, h, mask))
        if mask is not None:
            for p, q in zip(ps, new, strict=True):
                p.copy_(torch.where(_rows(mask, p), q, p))

    def _fused_adam(
        self, order: list[str], ps: Tensors, gs: Tensors, decayed: int, count: int
    ) -> None:
        """Every member's Adam step as torch's fused Adam on the stacked tensors, in place:
        the members share its scalars (`lr`, betas, eps and the step count `count` before
        this step). The decoupled decay, each member's own, comes first, as in `step`."""
        lr, h = self._lrs[0], self.hparams[0]
        if self._decays and decayed:
            decay = 1.0 - self.lr * self.constants["weight_decay"]  # (K,) float64
            foreach_mul_(list(ps[:decayed]), [_rows(decay, p).to(p.dtype) for p in ps[:decayed]])
        state = [self.state.setdefault(n, {}) for n in order]
        exp_avgs = [_buffer(s, "exp_avg", p) for s, p in zip(state, ps, strict=True)]
        exp_avg_sqs = [_buffer(s, "exp_avg_sq", p) for s, p in zip(state, ps, strict=True)]
        # torch adds 1 to each parameter's step tensor before the update.
        steps = self._fused_steps.get(len(ps))
        if steps is None or steps[0].device != ps[0].device:
            steps = self._fused_steps[len(ps)] = [
                ps[0].new_zeros((), dtype=torch.float32) for _ in ps
            ]
        for t in steps:
            t.fill_(count)
        adam(
            list(ps),
            [g.contiguous() for g in gs],
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            fused=True,
            amsgrad=False,
            beta1=float(h["betas"][0]),
            beta2=float(h["betas"][1]),
            lr=lr,
            weight_decay=0.0,
            eps=float(h["eps"]),
            maximize=False,
        )

    def _move(self, device: torch.device) -> None:
        """Keep the hyperparameters where the parameters are (no copy per step)."""
        if self.lr.device != device:
            self.lr, self.steps = self.lr.to(device), self.steps.to(device)
            self.constants = {k: v.to(device) for k, v in self.constants.items()}
            self._group(device)

    def _clip(self, grads: Tensors) -> Tensors:
        """torch.nn.utils.clip_grad_norm_ per member, over all of the member's gradients."""
        if not self._clips:
            return grads
        norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]  # (K,) each
        total = torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)  # (K, P) -> (K,)
        clip = self._clip_cast.get(total.dtype)
        if clip is None:
            clip = self._clip_cast[total.dtype] = self.constants["grad_clip"].to(total.dtype)
        # torch's max_norm / (total + 1e-6) is (total + 1e-6).reciprocal() * max_norm.
        coef = ((total + 1e-6).reciprocal() * clip).clamp_(max=1.0)  # (K,)
        if not self._clip_all:  # a member without clipping keeps its gradients (× 1)
            coef = torch.where(self._clip_on, coef, 1.0)
        views = {g.ndim: _rows(coef, g) for g in grads}
        return foreach_mul(grads, [views[g.ndim] for g in grads])

    def _update(
        self,
        order: list[str],
        ps: Tensors,
        gs: Tensors,
        h: dict[str, Views],
        mask: Tensor | None,
    ) -> Tensors:
        """Each member's torch.optim step, the tensors that its rule adds to the (decayed)
        parameters; commits the state of the active members."""
        if len(self.rules) == 1:  # every row one rule: no selection
            return self._run(next(iter(self.rules)), order, ps, gs, h, mask, None)
        out: Tensors = []
        for rule, rows in self.rules.items():
            # Every rule runs on all rows; only its own members' rows are kept, of state too.
            own = rows if mask is None else rows & mask
            step = self._run(rule, order, ps, gs, h, own, rows if mask is None else None)
            if out:
                select = self._select(rule, rows, step)
                step = [s.where(r, o) for s, r, o in zip(step, select, out, strict=True)]
            out = step
        return out

    def _run(
        self,
        rule: str,
        order: list[str],
        ps: Tensors,
        gs: Tensors,
        h: dict[str, Views],
        own: Tensor | None,
        rows: Tensor | None,
    ) -> Tensors:
        """One update rule on every row; its state changes only where `own` (all when None).

        With `rows` (the rule's own members, all active) the others' gradients enter as 0,
        which keeps their rows of the state at 0 (0·c + 0 = 0) without a selection; else the
        state of some members must stay as it is, and the rule runs on copies."""
        state = [self.state.setdefault(n, {}) for n in order]
        buffers = [
            [_buffer(s, b, p) for s, p in zip(state, ps, strict=True)] for b in BUFFERS[rule]
        ]
        update: Callable[[list[list[Tensor]], Tensors, dict[str, Views]], Tensors]
        update = getattr(self, f"_{rule}")  # _sgd, _momentum, _rmsprop or _adam
        if own is None or not buffers:
            return update(buffers, gs, h)
        if rows is not None:
            zero = [g.where(r, 0.0) for g, r in zip(gs, self._select(rule, rows, gs), strict=True)]
            return update(buffers, zero, h)
        copies = [[b.clone() for b in bs] for bs in buffers]
        out = update(copies, gs, h)
        for bs, cs in zip(buffers, copies, strict=True):
            for b, c in zip(bs, cs, strict=True):
                b.copy_(torch.where(_rows(own, b), c, b))
        return out

    def _select(self, name: str, rows: Tensor, like: Tensors) -> Tensors:
        """`rows` (a `(K,)` bool known as `name`, fixed until `_group`) viewed for each of
        `like`, made once per dimension count."""
        out = []
        for t in like:
            view = self._selects.get((name, t.ndim))
            if view is None:
                view = self._selects[(name, t.ndim)] = _rows(rows, t)
            out.append(view)
        return out

    def _sgd(self, buffers: list[list[Tensor]], g: Tensors, h: dict[str, Views]) -> Tensors:
        return foreach_mul(g, h["-lr"])

    def _momentum(self, buffers: list[list[Tensor]], g: Tensors, h: dict[str, Views]) -> Tensors:
        (buf,) = buffers
        # A zero buffer gives torch's first step, buf = g, exactly: 0·ρ + g = g.
        foreach_mul_(buf, h["momentum"])
        foreach_add_(buf, g)
        return foreach_mul(self._look_ahead(g, h["momentum"], buf), h["-lr"])

    def _look_ahead(self, g: Tensors, mom: Views, buf: Tensors) -> Tensors:
        """The direction of a `momentum`-rule step: `nesterov`'s g + ρ·buf, `momentum`'s buf."""
        if isinstance(self.nesterov, bool) and not self.nesterov:
            return buf
        ahead = foreach_mul(buf, mom)
        foreach_add_(ahead, g)
        if isinstance(self.nesterov, bool):
            return ahead
        select = self._select("nesterov", self.nesterov, g)
        return [a.where(r, b) for a, r, b in zip(ahead, select, buf, strict=True)]

    def _rmsprop(self, buffers: list[list[Tensor]], g: Tensors, h: dict[str, Views]) -> Tensors:
        (sq,) = buffers
        foreach_mul_(sq, h["alpha"])
        foreach_add_(sq, _squares(g, h["1-alpha"]))  # sq·α + (1 - α)·g·g
        avg = foreach_sqrt(sq)
        foreach_add_(avg, h["eps"])
        out = foreach_mul(g, h["-lr"])
        foreach_div_(out, avg)  # -lr·g / (√sq + ε)
        return out

    def _adam(self, buffers: list[list[Tensor]], g: Tensors, h: dict[str, Views]) -> Tensors:
        """torch's `_single_tensor_adam` (AdamW's decay is done by the caller, the same way)."""
        m, v = buffers
        foreach_lerp_(m, g, h["1-beta1"])
        foreach_mul_(v, h["beta2"])
        foreach_add_(v, _squares(g, h["1-beta2"]))  # v·β₂ + (1 - β₂)·g·g
        denom = foreach_sqrt(v)
        foreach_div_(denom, h["sqrt_bc2"])
        foreach_add_(denom, h["eps"])  # √v / √(1 - β₂ᵗ) + ε
        out = foreach_mul(m, h["-step_size"])
        foreach_div_(out, denom)  # -(lr / (1 - β₁ᵗ))·m / denom
        return out

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (call `StackedModels.keep` with it too).

        Buffers of an update rule no member uses any more are dropped."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.lr.device)
        self.hparams = [self.hparams[i] for i in index]
        self.kinds = [self.kinds[i] for i in index]
        self.lr, self.steps = self.lr[idx], self.steps[idx]
        self._lrs = [self._lrs[i] for i in index]
        self.constants = {k: v[idx] for k, v in self.constants.items()}
        self._group(self.lr.device)
        used = {b for r in self.rules for b in BUFFERS[r]}
        self.state = {
            n: {k: t[idx.to(t.device)] for k, t in s.items() if k in used}
            for n, s in self.state.items()
        }


def _buffer(state: dict[str, Tensor], name: str, like: Tensor) -> Tensor:
    """A state buffer, zeros at first (torch's first step then follows from the same code)."""
    buf = state.get(name)
    if buf is None:
        buf = state[name] = torch.zeros_like(like)
    return buf


def _squares(g: Tensors, weight: Views) -> Tensors:
    """(c·g)·g per tensor, in torch's order of operations for `c * g * g`."""
    out = foreach_mul(g, weight)
    foreach_mul_(out, g)
    return out
