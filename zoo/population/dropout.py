"""`MemberDropout`: dropout whose rate is a buffer, so that each member of a stack has its own
(`stack.StackedModels` puts one in place of each `nn.Dropout`; `batched` runs it batched)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
