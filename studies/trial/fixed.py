"""A config's model as its fixed values build it, before any search: what the decisions made
once per study read from the model itself (whether it can be batched,
`population.members.fallback_reason`; how much work a sample is, `executor.threads.fixed_work`)."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L

from regzoo.datamodules import batch_size_of, build_datamodule, data_facts
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.trial.train import model_facts
from regzoo.zoo import build_model

# A datamodule of the user's that says no `batch_size`: regzoo's own default stands in for it.
DEFAULT_BATCH_SIZE = 64


@dataclass
class FixedModel:
    """The model of a config's fixed values, the raw input shape it takes and its batch size."""

    model: L.LightningModule
    input_shape: tuple[int, ...]
    batch_size: int


def fixed_model(cfg: StudyConfig) -> FixedModel:
    """The model of the config's fixed values (searched keys at their defaults) and the batch
    size it trains at. Builds the datamodule only for what it says of its inputs: a regzoo
    datamodule loads no data (a user's without an `input_shape` serves its first batch), and
    the model's input pipeline is left unfitted."""
    model_kw, data_kw, _ = split_params(cfg, {})
    dm = build_datamodule(cfg.data.name, study_seed=cfg.seed, run_seed=cfg.seed, **data_kw)
    facts = model_facts(cfg, dm)
    model = build_model(cfg.model.name, **facts, **model_kw)
    shape = data_facts(dm, name=cfg.data.name)["input_shape"]
    return FixedModel(model, tuple(shape), batch_size_of(dm) or DEFAULT_BATCH_SIZE)
