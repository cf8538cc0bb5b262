"""Each member's own learning-rate schedule, computed by the real torch scheduler.

A member's scheduler is built by `make_scheduler`, the code a `Classifier` configures for
Lightning, on a one-parameter SGD whose only use is to carry the learning rate. So the
population follows exactly torch's schedules (plateau's thresholds and cooldowns, cosine's
recurrence) instead of a re-implementation.
"""

from __future__ import annotations

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
        self.carrier = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=hp["lr"])
        self.scheduler: Any = make_scheduler(
            self.carrier, SimpleNamespace(**hp), max_epochs=max_epochs
        )

    @property
    def lr(self) -> float:
        return float(self.carrier.param_groups[0]["lr"])

    def step(self, val_loss: float | None) -> None:
        if self.scheduler is None:
            return
        # The carrier has no gradient, so its step changes nothing; it tells torch that the
        # optimizer stepped before the scheduler (no order warning).
        self.carrier.step()
        if val_loss is None:
            self.scheduler.step()
        else:
            self.scheduler.step(val_loss)


class MemberSchedulers:
    """The shared `scheduler` kind, with each member's own parameters, stepped per epoch.

    Construction writes the initial learning rates into `optimizer.lr` (`piecewise` starts at
    `lr_values[0]`, not `lr`).

    Args:
        max_epochs: The period of `cosine` (the Trainer's `max_epochs` for a single model).
    """

    def __init__(
        self, stack: StackedModels, optimizer: StackedOptimizer, *, max_epochs: int
    ) -> None:
        self.kind: str = stack.hparams[0]["scheduler"]
        self.optimizer = optimizer
        self.members = [_Member(hp, max_epochs) for hp in stack.hparams]
        self._write()

    def step(self, val_loss: Tensor | None = None) -> None:
        """Once per epoch; `val_loss` `(K,)`, each member's validation loss, for `plateau`."""
        if self.kind == "plateau":
            if val_loss is None or val_loss.shape != (len(self.members),):
                raise ValueError(
                    f"scheduler='plateau' needs val_loss of shape ({len(self.members)},)"
                )
            losses = [float(v) for v in val_loss.detach().cpu().double()]
            for member, loss in zip(self.members, losses, strict=True):
                member.step(loss)
        else:
            for member in self.members:
                member.step(None)
        self._write()

    def _write(self) -> None:
        lrs = [m.lr for m in self.members]
        self.optimizer.lr = torch.tensor(lrs, dtype=torch.float64, device=self.optimizer.lr.device)

    def keep(self, index: Sequence[int]) -> None:
        """Keep only these members, in this order (with `StackedOptimizer.keep`, which
        compacts `lr`)."""
        self.members = [self.members[i] for i in index]
