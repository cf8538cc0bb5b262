"""Whether a network of the user's trains the same batched as alone: a probe, run once.

`batch_refusal` knows the layers that cannot be batched at all; a user's network may hold
anything else (a residual sum, a layer norm, a custom op whose batching rule is wrong or
missing). `batching_mismatch` finds out: two members through the stack, forward and backward,
against the same two run one after the other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regzoo._checks import one_line
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.population.stack import StackedModels

PROBE_BATCH = 8
# float32 sums in another order: a batched member's values differ from its own by rounding.
RTOL, ATOL = 1e-4, 1e-5


def probe_members(model: Classifier) -> list[Classifier]:
    """`model` and a copy with other weights: two members that must not be confused. An
    unfitted input pipeline is fitted on noise (as many samples as a PCA needs)."""
    generator = torch.Generator().manual_seed(1)
    if not model.pipeline.is_fitted:
        size = max(64, 2 * math.prod(model.raw_shape))
        model.fit_input(torch.randn(size, *model.raw_shape, generator=generator))
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return [model, other]


def batching_mismatch(models: Sequence[Classifier]) -> str | None:
    """Why `models` (built, of one class) do not compute batched what they compute alone, in
    one line; None when their logits and gradients agree. An error counts as a mismatch.

    Training mode must run (dropout draws differ, so only its errors count); evaluation mode
    must agree, logits and every parameter's gradient.
    """
    first = models[0]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_BATCH, *first.raw_shape, generator=generator)
    y = torch.arange(PROBE_BATCH) % int(first.hp.num_classes)
    try:
        stack = StackedModels(models).train()
        stack(x).sum().backward()  # errors only: dropout masks are drawn otherwise alone
        stack = StackedModels(models).eval()
        batched = stack(x)  # (K, B, num_classes)
        torch.stack([F.cross_entropy(logits, y) for logits in batched]).sum().backward()
        for k, model in enumerate(models):
            why = _differs(k, model, x, y, batched[k].detach(), stack.member_grads(k))
            if why is not None:
                return why
    except Exception as exc:  # whatever a user's layer raises under vmap
        return f"batched, it raised {type(exc).__name__}: {one_line(exc, lines=1)}"
    finally:
        for model in models:
            model.zero_grad(set_to_none=True)
    return None


def _differs(
    k: int,
    model: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    batched: torch.Tensor,
    grads: dict[str, torch.Tensor],
) -> str | None:
    """Member k's logits and gradients alone, against the batched ones."""
    model.eval()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    if not torch.allclose(logits.detach(), batched, rtol=RTOL, atol=ATOL):
        return f"member {k}'s logits batched differ from its own"
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.allclose(p.grad, grads[name], rtol=RTOL, atol=ATOL):
            return f"member {k}'s gradient of {name!r} batched differs from its own"
    return None
