"""Which of a study's trials can share a population, and what each member is.

Members of one population share everything that fixes the batched model's structure and its
loop: the model, its depth and layer types, the batch size, the data options and the Trainer.
They differ in every continuous training hparam (`MEMBER_HPARAMS`: learning rate, momentum,
betas, eps, alpha, the penalties and decoupled decay, gradient clipping, dropout, the
initialization and the scheduler's parameters), the optimizer and scheduler kinds, the layer
widths (`WIDTH_HPARAMS`, zero-padded), the regularization type, the augmentation strengths, and
the seed. A search over a shared key (say `model.activation`) is not refused: the trials the
sampler proposes are grouped by their shared values, and each group trains as its own
population.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from regzoo.studies.config.schema import Population, StudyConfig
from regzoo.studies.config.search import REGULARIZATION
from regzoo.studies.config.validate import check_population
from regzoo.studies.trial.fixed import fixed_model
from regzoo.zoo.population import MEMBER_HPARAMS, batch_refusal
from regzoo.zoo.population.stack import WIDTH_HPARAMS


@dataclass
class MemberSpec:
    """One trial to train as a member: its Optuna trial (None outside a study), sampled
    parameters, folder, seed and run name; its probes, objects with any of the member hooks
    `PopulationModule` calls (`module.MemberView`), as an experiment's trial carries; and its
    own config where it differs from the population's in what members may differ in beyond
    their params (`MEMBER_SECTIONS`: its early stopping and its Trainer's `max_epochs`)."""

    trial: optuna.trial.BaseTrial | None
    params: dict[str, Any]
    run_dir: Path
    seed: int
    run_name: str
    probes: list[Any] = field(default_factory=list)
    config: StudyConfig | None = None


# Config entries a member may have of its own (`MemberSpec.config`): it stops by its own
# criteria or at its own last epoch, and leaves the batch there.
MEMBER_SECTIONS = ("early_stopping", "trainer.max_epochs")


def is_member_key(key: str) -> bool:
    """True for a search key whose value may differ between the members of one population
    (the layer widths too: `shared_value` keeps their depth shared)."""
    section, _, rest = key.partition(".")
    if section == "model":
        return rest in MEMBER_HPARAMS or rest in WIDTH_HPARAMS or rest == REGULARIZATION
    return section == "data" and rest.startswith("augment.")


def shared_values(leaves: dict[str, Any]) -> dict[str, Any]:
    """What members of one population must share among a trial's dotted keys and values:
    every value but the member keys', and the depth (not the widths) of `model.hidden` and
    `model.channels` (members narrower than the stack are zero-padded)."""
    shared = {k: v for k, v in leaves.items() if not is_member_key(k)}
    for key in (f"model.{w}" for w in WIDTH_HPARAMS):
        if isinstance(leaves.get(key), list | tuple):
            shared[f"{key}#depth"] = len(leaves[key])
    return shared


def group_key(params: dict[str, Any]) -> str:
    """The shared values of a trial's parameters: trials with equal keys share a population."""
    return json.dumps(shared_values(params), sort_keys=True, default=str)


def group(members: Sequence[MemberSpec]) -> list[list[MemberSpec]]:
    """The members split into populations by `group_key`, in the order first proposed."""
    groups: dict[str, list[MemberSpec]] = {}
    for m in members:
        groups.setdefault(group_key(m.params), []).append(m)
    return list(groups.values())


def fallback_reason(cfg: StudyConfig, *, distributed: bool = False) -> str | None:
    """Why a config with `population.size` > 1 trains one trial per Trainer instead (one line),
    or None when it can be batched: decided from the layers of the model its fixed values build
    (`regzoo.zoo.population.batch_refusal`), whatever the model is called."""
    refusal = batch_refusal(fixed_model(cfg)[0])
    if refusal is not None:
        return (
            f"model {cfg.model.name!r} cannot be batched: {refusal}; trials train one per Trainer"
        )
    if distributed:
        return "--devices-per-trial: each trial trains with DDP, one per Trainer"
    return None


def with_population(
    cfg: StudyConfig, size: int | None, *, distributed: bool = False
) -> tuple[StudyConfig, str | None]:
    """The config with `population.size` set to `size` (None: the config's), and the one-line
    note of a fallback to one trial per Trainer (`fallback_reason`), where one applies."""
    if size is not None and size != cfg.population.size:
        cfg = cfg.model_copy(update={"population": Population(size=size)})
        check_population(cfg, source="--population")
    if cfg.population.size <= 1:
        return cfg, None
    note = fallback_reason(cfg, distributed=distributed)
    if note is not None:
        cfg = cfg.model_copy(update={"population": Population(size=1)})
    return cfg, note
