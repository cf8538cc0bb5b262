"""The sampler and the pruner a config names, built from its `sampler:` and `pruner:` sections."""

from __future__ import annotations

import optuna

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import grid_space
from regzoo.studies.population.pruning import PeerPruner


def make_sampler(cfg: StudyConfig, *, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The config's sampler, seeded with `seed` when given (a worker's own), else the config's."""
    s = cfg.sampler
    seed = s.seed if seed is None else seed
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid_space(cfg.search), seed=seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # A population asks K trials at once: the constant liar keeps TPE from proposing K
    # near-copies of the same point while none of them has a value yet.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=cfg.population.size > 1)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The config's pruner; with populations, one that counts running peers (`PeerPruner`)."""
    pruner = _pruner(cfg)
    return PeerPruner(pruner) if cfg.population.size > 1 else pruner


def _pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=cfg.trainer.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()
