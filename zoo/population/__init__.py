"""Populations: K models of one architecture (widths may differ) trained as one batched model.

`StackedModels` holds the members' tensors stacked along a member axis (zero-padded to the
widest) and runs them with batched operations (`batched.BatchedForward`), or `torch.func.vmap`
for layers it does not know (`batch_refusal` says, from a model's layers, why one cannot be
batched at all); `StackedOptimizer` applies each member's own torch optimizer rule,
decoupled decay and gradient clipping; `MemberSchedulers` steps each member's own torch scheduler.
`Population` is the LightningModule that trains them with a plain `L.Trainer`, and gives each
member back as an ordinary model (`member(i)`).
"""

from regzoo.zoo.population.module import Population
from regzoo.zoo.population.optim import StackedOptimizer
from regzoo.zoo.population.probe import batching_mismatch, probe_members
from regzoo.zoo.population.schedule import MemberSchedulers
from regzoo.zoo.population.stack import (
    MEMBER_HPARAMS,
    PopulationError,
    StackedModels,
    batch_refusal,
    check_compatible,
)

__all__ = [
    "MEMBER_HPARAMS",
    "MemberSchedulers",
    "Population",
    "PopulationError",
    "StackedModels",
    "StackedOptimizer",
    "batch_refusal",
    "batching_mismatch",
    "check_compatible",
    "probe_members",
]
