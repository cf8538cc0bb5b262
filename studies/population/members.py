"""Which runs can share a population.

Members of one population share everything that fixes the batched model's structure and its
loop: the model, its depth and layer types, the batch size, the data options and the Trainer.
They differ in every continuous training hparam (`MEMBER_HPARAMS`: learning rate, momentum,
betas, eps, alpha, the penalties and decoupled decay, gradient clipping, dropout, the
initialization and the scheduler's parameters), the optimizer and scheduler kinds, the layer
widths (`WIDTH_HPARAMS`, zero-padded), the regularization type, the augmentation strengths, the
input normalization among `none`, `minmax` and `standard` of a regzoo dataset (each an
elementwise shift and scale inside the model, `stack.SCALINGS`; `pca` only with `pca`; a user's
datamodule's own `normalize` option is shared), and the seed. A search over a shared key (say
`model.activation`) is not refused: the trials the sampler proposes are grouped by their shared
values, and each group trains as its own population.
"""

from __future__ import annotations

import json
from typing import Any

from regzoo.datamodules import ArrayDataModule, datamodule_class
from regzoo.studies.config.schema import Population, StudyConfig
from regzoo.studies.config.search import REGULARIZATION, split_params
from regzoo.studies.config.validate import check_population
from regzoo.studies.trial.fixed import fixed_model
from regzoo.studies.trial.spec import TrialSpec
from regzoo.zoo import Classifier
from regzoo.zoo.population import (
    MEMBER_HPARAMS,
    batch_refusal,
    batching_mismatch,
    probe_members,
)
from regzoo.zoo.population.stack import SCALINGS, WIDTH_HPARAMS

NORMALIZE = "normalize"

# Config entries a member may have of its own (its spec's config): it stops by its own
# criteria or at its own last epoch, and leaves the batch there.
MEMBER_SECTIONS = ("early_stopping", "trainer.max_epochs")


def is_member_key(key: str) -> bool:
    """True for a search key whose value may differ between the members of one population
    (the layer widths too: `shared_value` keeps their depth shared; `data.normalize` within
    `SCALINGS`: `shared_value` keeps that shared)."""
    section, _, rest = key.partition(".")
    if section == "model":
        return rest in MEMBER_HPARAMS or rest in WIDTH_HPARAMS or rest == REGULARIZATION
    return section == "data" and (rest.startswith("augment.") or rest == NORMALIZE)


def shared_values(leaves: dict[str, Any]) -> dict[str, Any]:
    """What members of one population must share among a trial's dotted keys and values:
    every value but the member keys', the depth (not the widths) of `model.hidden` and
    `model.channels` (members narrower than the stack are zero-padded), and whether
    `data.normalize` scales (`SCALINGS`, one of which members may each have) or projects."""
    shared = {k: v for k, v in leaves.items() if not is_member_key(k)}
    for key in (f"model.{w}" for w in WIDTH_HPARAMS):
        if isinstance(leaves.get(key), list | tuple):
            shared[f"{key}#depth"] = len(leaves[key])
    normalize = leaves.get(f"data.{NORMALIZE}")
    if normalize is not None:
        scales = normalize in SCALINGS
        shared[f"data.{NORMALIZE}#form"] = "scale" if scales else normalize
    return shared


def group_key(spec: TrialSpec) -> str:
    """What a run must share with the other members of its population: the model, data and
    Trainer values it trains with (its params over its fixed config), less what members may
    differ in. Runs with equal keys may share a population."""
    model, data, trainer = split_params(spec.fixed, spec.params)
    trainer.pop("max_epochs", None)
    augment = data.pop("augment", None) or {}
    leaves = {
        "model.name": spec.fixed.model.name,
        "data.name": spec.fixed.data.name,
        **{f"model.{k}": v for k, v in model.items()},
        **{f"data.{k}": v for k, v in data.items()},
        **{f"data.augment.{k}": v for k, v in augment.items()},
        **{f"trainer.{k}": v for k, v in trainer.items()},
    }
    shared = shared_values(leaves)
    if NORMALIZE in data and not issubclass(
        datamodule_class(spec.fixed.data.name), ArrayDataModule
    ):  # a user's datamodule's own `normalize` option: one datamodule serves every member
        shared[f"data.{NORMALIZE}"] = data[NORMALIZE]
    return json.dumps(shared, sort_keys=True, default=str)


def fallback_reason(cfg: StudyConfig, *, distributed: bool = False) -> str | None:
    """Why a config with `population.size` > 1 trains one trial per Trainer instead (one line),
    or None when it can be batched: decided from the model its fixed values build, whatever it
    is called: its layers (`regzoo.zoo.population.batch_refusal`), and for a user's model (one
    recorded by import path) a probe of two members batched against alone
    (`batching_mismatch`). A LightningModule of the user's own never batches."""
    model = fixed_model(cfg).model
    name = cfg.model.name
    if not isinstance(model, Classifier):
        return f"model {name!r} is a LightningModule of its own; trials train one per Trainer"
    refusal = batch_refusal(model)
    if refusal is None and ":" in model.model_name:
        refusal = batching_mismatch(probe_members(model))
    if refusal is not None:
        return f"model {name!r} cannot be batched: {refusal}; trials train one per Trainer"
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
