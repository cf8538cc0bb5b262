"""regzoo's studies: Optuna hyperparameter studies of zoo models on regzoo datamodules.

    from regzoo.studies import load_config, run_study
    outcome = run_study(load_config("studies/configs/default.yaml"), trials=5, wandb="disabled")

On the command line: `regzoo run studies/configs/default.yaml`. The folders are layers
(docs/architecture.md): `config` (schema, validation, search space), `trial` (one training run),
`loop` (the study loop and its storage), `scaling` (workers, DDP), `results` (reading back,
reports, export, W&B, console), `experiments` (the lecture's), `cli`.
"""

from regzoo.studies.config.load import apply_override, load_config, validate_config
from regzoo.studies.config.schema import DEFAULT_STORAGE, ConfigError, StudyConfig
from regzoo.studies.loop.study import open_study, run_study
from regzoo.studies.results.console import StudyOutcome

__all__ = [
    "DEFAULT_STORAGE",
    "ConfigError",
    "StudyConfig",
    "StudyOutcome",
    "apply_override",
    "load_config",
    "open_study",
    "run_study",
    "validate_config",
]
