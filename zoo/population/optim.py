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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from regzoo.zoo.classifier import OPTIMIZERS
from regzoo.zoo.population.stack import PopulationError, StackedModels

# Members' constants, as (K,) float64 tensors, by the name used below.
_CONSTANTS = ("momentum", "beta1", "beta2", "eps", "alpha", "weight_decay", "grad_clip")
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


def _as_member(values: Tensor, like: Tensor) -> Tensor:
    """(K,) float64 -> (K, 1, ..., 1) in `like`'s dtype, broadcasting over a stacked tensor."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *[1] * (like.ndim - 1))


def _rows(values: Tensor, like: Tensor) -> Tensor:
    """(K,) bool -> (K, 1, ..., 1), selecting members' rows of a stacked tensor."""
    return values.view(-1, *[1] * (like.ndim - 1))


class StackedOptimizer:
    """Each member's own `optimizer` kind and hyperparameters.

    `lr` holds the current learning rates; `MemberSchedulers` writes it (and sets its initial
    value, which `piecewise` takes from `lr_values`). Create it after `StackedModels.to`: the
    optimizer state is allocated at the first step, like the parameters. `state` maps a
    parameter's name to its buffers, each `(K, ...)`, whose rows of members of another update
    rule stay zero.
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
        that a one-kind population runs exactly the one-kind code)."""
        rules = [RULES[k] for k in self.kinds]
        self.rules: dict[str, Tensor] = {
            r: torch.tensor([x == r for x in rules], device=device) for r in dict.fromkeys(rules)
        }
        looks = {k == "nesterov" for k in self.kinds if RULES[k] == "momentum"}
        self.nesterov: bool | Tensor = looks == {True}
        if len(looks) > 1:
            self.nesterov = torch.tensor([k == "nesterov" for k in self.kinds], device=device)

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
        lr, c = self.lr, self.constants
        mask = None if active is None else active.to(device=self.lr.device, dtype=torch.bool)
        self.steps += 1 if mask is None else mask.to(torch.float64)
        # Optimizer group order: penalized parameters first (clip_grad_norm_ sums in this order).
        order = [n for n in names if n in self.stack.penalized]
        order += [n for n in names if n not in self.stack.penalized]
        clipped = self._clip({n: grads[n] for n in order}, c["grad_clip"])
        for name in order:
            p, g = params[name], clipped[name]
            decay = c["weight_decay"] if name in self.stack.penalized else None
            new_p = p if decay is None else p * _as_member(1 - lr * decay, p)
            new_p = self._update(name, new_p, g, lr, c, mask)
            _commit(p, new_p, mask)

    def _move(self, device: torch.device) -> None:
        """Keep the hyperparameters where the parameters are (no copy per step)."""
        if self.lr.device != device:
            self.lr, self.steps = self.lr.to(device), self.steps.to(device)
            self.constants = {k: v.to(device) for k, v in self.constants.items()}
            self._group(device)

    def _clip(self, grads: dict[str, Tensor], clip: Tensor) -> dict[str, Tensor]:
        """torch.nn.utils.clip_grad_norm_ per member, over all of the member's gradients."""
        if not any(h["grad_clip"] for h in self.hparams):  # no device sync to find out
            return grads
        norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads.values()]  # (K,)
        total = torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)  # (K, P) -> (K,)
        # torch's max_norm / (total + 1e-6) is (total + 1e-6).reciprocal() * max_norm.
        coef = (total + 1e-6).reciprocal() * clip.to(total.dtype)
        coef = torch.where(clip > 0, coef.clamp(max=1.0), torch.ones_like(coef))  # (K,)
        return {n: g * coef.view(-1, *[1] * (g.ndim - 1)) for n, g in grads.items()}

    def _update(
        self, name: str, p: Tensor, g: Tensor, lr: Tensor, c: dict[str, Tensor], mask: Tensor | None
    ) -> Tensor:
        """Each member's torch.optim update of `p` (already decayed) from `g`; commits the
        state of the active members."""
        state = self.state.setdefault(name, {})
        if len(self.rules) == 1:  # every row one rule: no selection
            return self._rule(next(iter(self.rules)), state, p, g, lr, c, mask)
        out = p
        for rule, rows in self.rules.items():
            # Every rule runs on all rows; only its own members' rows are kept, of state too.
            own = rows if mask is None else rows & mask
            out = torch.where(_rows(rows, p), self._rule(rule, state, p, g, lr, c, own), out)
        return out

    def _rule(
        self,
        rule: str,
        state: dict[str, Tensor],
        p: Tensor,
        g: Tensor,
        lr: Tensor,
        c: dict[str, Tensor],
        mask: Tensor | None,
    ) -> Tensor:
        """One update rule on every row; commits its state where `mask` (all when None)."""
        if rule in ("sgd", "momentum"):
            if rule == "momentum":
                mom = _as_member(c["momentum"], p)
                buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                # A zero buffer gives torch's first step, buf = g, exactly: 0·ρ + g = g.
                new_buf = buf * mom + g
                _commit(buf, new_buf, mask)
                g = self._look_ahead(g, mom, new_buf)
            return p + _as_member(-lr, p) * g
        if rule == "rmsprop":
            sq = state.setdefault("square_avg", torch.zeros_like(p))
            alpha = c["alpha"]
            new_sq = sq * _as_member(alpha, p) + _as_member(1 - alpha, p) * g * g
            _commit(sq, new_sq, mask)
            avg = new_sq.sqrt() + _as_member(c["eps"], p)
            return p + _as_member(-lr, p) * g / avg
        return self._adam(state, p, g, lr, c, mask)

    def _look_ahead(self, g: Tensor, mom: Tensor, buf: Tensor) -> Tensor:
        """The direction of a `momentum`-rule step: `nesterov`'s g + ρ·buf, `momentum`'s buf."""
        if isinstance(self.nesterov, bool):
            return g + mom * buf if self.nesterov else buf
        return torch.where(_rows(self.nesterov, g), g + mom * buf, buf)

    def _adam(
        self,
        state: dict[str, Tensor],
        p: Tensor,
        g: Tensor,
        lr: Tensor,
        c: dict[str, Tensor],
        mask: Tensor | None,
    ) -> Tensor:
        """torch's `_single_tensor_adam` (AdamW's decay is done by the caller, the same way)."""
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        beta1, beta2 = c["beta1"], c["beta2"]
        new_m = torch.lerp(m, g, _as_member(1 - beta1, p))
        new_v = v * _as_member(beta2, p) + _as_member(1 - beta2, p) * g * g
        _commit(m, new_m, mask)
        _commit(v, new_v, mask)
        bias_correction1 = 1 - beta1**self.steps  # (K,) float64
        bias_correction2 = 1 - beta2**self.steps
        step_size = lr / bias_correction1
        denom = new_v.sqrt() / _as_member(bias_correction2.sqrt(), p) + _as_member(c["eps"], p)
        return p + _as_member(-step_size, p) * new_m / denom

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (call `StackedModels.keep` with it too).

        Buffers of an update rule no member uses any more are dropped."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.lr.device)
        self.hparams = [self.hparams[i] for i in index]
        self.kinds = [self.kinds[i] for i in index]
        self.lr, self.steps = self.lr[idx], self.steps[idx]
        self.constants = {k: v[idx] for k, v in self.constants.items()}
        self._group(self.lr.device)
        used = {b for r in self.rules for b in BUFFERS[r]}
        self.state = {
            n: {k: t[idx.to(t.device)] for k, t in s.items() if k in used}
            for n, s in self.state.items()
        }


def _commit(target: Tensor, new: Tensor, mask: Tensor | None) -> None:
    """target ← new for the active members (all when `mask` is None)."""
    if mask is None:
        target.copy_(new)
    else:
        target.copy_(torch.where(mask.view(-1, *[1] * (target.ndim - 1)), new, target))
