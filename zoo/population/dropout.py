"""`MemberDropout`: dropout whose rate is a buffer, so that each member of a stack has its own
(`stack.StackedModels` puts one in place of each `nn.Dropout`; `batched` runs it batched)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MemberDropout(nn.Module):
    """Dropout whose rate is a buffer, so that each member of a stack has its own.

    The mask is computed without Python control flow on `p` (vmap sees one graph); `p = 0`
    keeps every unit and scales by 1, so it returns `x` exactly.
    """

    p: Tensor

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return x * self.noise(x, self.p)

    @staticmethod
    def noise(x: Tensor, p: Tensor) -> Tensor:
        """What `x` is multiplied by: `[u ≥ p] / (1 − p)` for u uniform on [0, 1), as
        `F.dropout` makes it (a Bernoulli(1 − p) mask divided by 1 − p, so each kept unit
        is `x·(1/(1 − p))`)."""
        return (torch.rand_like(x) >= p).to(x.dtype) / (1 - p)

    @staticmethod
    def scale(u: Tensor, p: Tensor) -> Tensor:
        """`noise` of uniform numbers `u` already drawn, made in place in `u` (the batched
        path's: the draw, the comparison and the scaling one tensor; vmap has no batching
        rule for the in-place comparison)."""
        return u.ge_(p).div_(1 - p)
