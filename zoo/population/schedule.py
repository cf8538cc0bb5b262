"""Each member's own learning-rate schedule, computed by the real torch scheduler.

A member's scheduler is built by `make_scheduler`, the code a `Classifier` configures for
Lightning, on a one-parameter SGD whose only use is to carry the learning rate. So the
population follows exactly torch's schedules (plateau's thresholds and cooldowns, cosine's
recurrence) instead of a re-implementation. Members may use different kinds: each steps its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from regzoo.zoo.classifier import make_scheduler
from regzoo.zoo.population.optim import StackedOptimizer
from regzoo.zoo.population.stack import StackedModels


class _Member:
    """One member's scheduler over a carrier optimizer."""

    def __init__(self, hp: dict[str, Any], max_epochs: int) -> None:
        self.kind: str = hp["scheduler"]
        self.carrier = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=hp["lr"])
        self.scheduler: Any = make_scheduler(
            self.carrier, SimpleNamespace(**hp), max_epochs=max_epochs
        )

    @property
    def lr(self) -> float:
        return float(self.carrier.param_groups[0]["lr"])

    def step(self, val_loss: float) -> None:
        """One epoch; `val_loss` is read by `plateau` only."""
        if self.scheduler is None:
            return
        # The carrier has no gradient, so its step changes nothing; it tells torch that the
        # optimizer stepped before the scheduler (no order warning).
        self.carrier.step()
        if self.kind == "plateau":
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()


class MemberSchedulers:
    """Each member's own `scheduler` kind and parameters, stepped per epoch.

    Construction writes the initial learning rates into `optimizer.lr` (`piecewise` starts at
    `lr_values[0]`, not `lr`).

    Args:
        max_epochs: The period of `cosine` (the Trainer's `max_epochs` for a single model):
            one for all members, or each member's own.
    """

    def __init__(
        self, stack: StackedModels, optimizer: StackedOptimizer, *, max_epochs: int | Sequence[int]
    ) -> None:
        self.optimizer = optimizer
        periods = [max_epochs] * stack.size if isinstance(max_epochs, int) else list(max_epochs)
        if len(periods) != stack.size:
            raise ValueError(f"max_epochs: {len(periods)} values for {stack.size} members")
        self.members = [_Member(hp, n) for hp, n in zip(stack.hparams, periods, strict=True)]
        self._write()

    @property
    def kinds(self) -> list[str]:
        """Each member's scheduler kind, in row order."""
        return [m.kind for m in self.members]

    def step(self, val_loss: Tensor | None = None) -> None:
        """Once per epoch; `val_loss` `(K,)`, each member's validation loss, needed when a
        member's scheduler is `plateau` (the others ignore it)."""
        plateau = [i for i, m in enumerate(self.members) if m.kind == "plateau"]
        if plateau and (val_loss is None or val_loss.shape != (len(self.members),)):
            got = None if val_loss is None else tuple(val_loss.shape)
            raise ValueError(
                f"scheduler='plateau' (members {plateau}) needs val_loss of shape "
                f"({len(self.members)},), got {got}"
            )
        losses = (
            [float(v) for v in val_loss.detach().cpu().double()]
            if plateau and val_loss is not None
            else [math.nan] * len(self.members)
        )
        for member, loss in zip(self.members, losses, strict=True):
            member.step(loss)
        self._write()

    def _write(self) -> None:
        self.optimizer.set_lr([m.lr for m in self.members])

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (with `StackedOptimizer.keep`, which
        compacts `lr`)."""
        self.members = [self.members[i] for i in index]
