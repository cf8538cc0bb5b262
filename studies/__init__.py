"""regzoo's studies: Optuna hyperparameter studies of zoo models on regzoo datamodules.

python -m studies run studies/configs/default.yaml
"""

from studies.config import ConfigError, StudyConfig, load_config

__all__ = ["ConfigError", "StudyConfig", "load_config"]
