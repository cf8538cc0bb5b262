"""torch's private API that the zoo uses, in one place (`studies/_compat.py` holds the studies'):
the multi-tensor `torch._foreach_*` ops, which torch.optim's own foreach optimizers are built on.
Each runs one elementwise op over a list of tensors in one call (one dispatch for a population's
parameters instead of one per parameter); the results equal the per-tensor ops'. Checked against
torch 2.13: if a later torch renames them, only this file changes.
"""

from __future__ import annotations

import torch

foreach_add_ = torch._foreach_add_
foreach_addcmul_ = torch._foreach_addcmul_
foreach_div_ = torch._foreach_div_
foreach_lerp_ = torch._foreach_lerp_
foreach_mul = torch._foreach_mul
foreach_mul_ = torch._foreach_mul_
foreach_sign = torch._foreach_sign
foreach_sqrt = torch._foreach_sqrt

__all__ = [
    "foreach_add_",
    "foreach_addcmul_",
    "foreach_div_",
    "foreach_lerp_",
    "foreach_mul",
    "foreach_mul_",
    "foreach_sign",
    "foreach_sqrt",
]
