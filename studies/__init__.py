"""regzoo's studies: Optuna hyperparameter studies of zoo models on regzoo datamodules.

    from regzoo.studies import load_config, run_study
    outcome = run_study(load_config("studies/configs/default.yaml"), trials=5, wandb="disabled")

On the command line: `regzoo run studies/configs/default.yaml`. The folders are layers
(docs/architecture.md): `config` (schema, validation, search space), `trial` (one training run),
`loop` (the study loop and its storage), `scaling` (workers, DDP), `results` (reading back,
reports, export, W&B, console), `experiments` (the lecture's), `cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regzoo._lazy import lazy_exports

# Loaded when first used: importing one module of a layer (the CLI's options) must not load
# torch and Lightning through this front.
_EXPORTS = {
    "DEFAULT_STORAGE": "regzoo.studies.config.schema",
    "ConfigError": "regzoo.studies.config.schema",
    "StudyConfig": "regzoo.studies.config.schema",
    "apply_override": "regzoo.studies.config.load",
    "load_config": "regzoo.studies.config.load",
    "validate_config": "regzoo.studies.config.load",
    "open_study": "regzoo.studies.loop.study",
    "run_study": "regzoo.studies.loop.study",
    "StudyOutcome": "regzoo.studies.loop.study",
}

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

if TYPE_CHECKING:
    from regzoo.studies.config.load import apply_override, load_config, validate_config
    from regzoo.studies.config.schema import DEFAULT_STORAGE, ConfigError, StudyConfig
    from regzoo.studies.loop.study import StudyOutcome, open_study, run_study


__getattr__ = lazy_exports(__name__, _EXPORTS)
