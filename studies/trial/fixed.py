"""A config's model as its fixed values build it, before any search and without data: what the
decisions made once per study read from the model itself (whether it can be batched,
`population.members.fallback_reason`; how much work a sample is, `executor.threads.fixed_work`)."""

from __future__ import annotations

from regzoo.datamodules import create_datamodule
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.trial.train import data_facts
from regzoo.zoo import Classifier, create_model


def fixed_model(cfg: StudyConfig) -> tuple[Classifier, int]:
    """The model of the config's fixed values (searched keys at their defaults) and the batch
    size it trains at. Builds the datamodule only for what it says of its inputs: no data is
    loaded, and the model's input pipeline is left unfitted."""
    model_kw, data_kw, _ = split_params(cfg, {})
    dm = create_datamodule(cfg.data.name, **data_kw)
    return create_model(cfg.model.name, **data_facts(dm), **model_kw), dm.batch_size
