"""`train_population`: what `trial.train.train_run` is for one run, for K runs at once.

    results = train_population(specs, trials, probes, wandb_mode="disabled")

One datamodule serves every member: the data options and batch size are shared. Each member
keeps its own batch order (its seed's, as alone; `ArrayDataModule.member_train_dataloader`),
augments its batch with its own strengths, and draws its initial weights from its own seed,
exactly as its run on its own would. Its `max_epochs` and early stopping may be its own (its
spec's config): it leaves the batch when they end it. Every member ends with what a run on its
own leaves: `best.ckpt` (or `last.ckpt`) in the same checkpoint format, `metrics.csv`, a W&B
run, test metrics from its kept state, and its trial told, as soon as it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import optuna
import torch
from lightning.pytorch.loggers import CSVLogger

from regzoo.datamodules import (
    ArrayDataModule,
    build_datamodule,
    datamodule_options,
    member_augmenter,
)
from regzoo.studies.config.search import split_params
from regzoo.studies.population.module import Member, PopulationModule
from regzoo.studies.trial import tracking
from regzoo.studies.trial.callbacks import SwallowedInterrupt
from regzoo.studies.trial.lifecycle import Lifecycle, error_text
from regzoo.studies.trial.spec import RunResult, TrialSpec
from regzoo.studies.trial.train import (
    SEED_ENV,
    build_trainer,
    interruptible,
    model_facts,
    restored_environ,
    run_config,
    run_logger,
)
from regzoo.zoo import create_model
from regzoo.zoo.population import StackedModels

POPULATION_ATTR = "population"  # a member's user attr: the numbers of its population's trials


def train_population(
    specs: list[TrialSpec],
    trials: list[optuna.Trial | None],
    probes: list[list[Any]],
    *,
    wandb_mode: str = "disabled",
) -> list[RunResult]:
    """Train the specs together; one result per spec, in order, each recorded and told.

    A member that diverges, is pruned or stops ends alone. An exception fails every member
    still training (each recorded and told with the error); Ctrl-C fails them too and
    propagates.
    """
    with restored_environ(SEED_ENV):
        return _train(specs, trials, probes, wandb_mode)


def _train(
    specs: list[TrialSpec],
    trials: list[optuna.Trial | None],
    probes: list[list[Any]],
    wandb_mode: str,
) -> list[RunResult]:
    first = specs[0]
    L.seed_everything(first.seed, workers=True, verbose=False)
    _, shared_data, trainer_kw = split_params(first.fixed, first.params)
    name = first.config.data.name
    if "augment" in shared_data or "augment" in datamodule_options(name):
        shared_data["augment"] = None  # each member augments its own batches
    dm = build_datamodule(name, study_seed=first.config.seed, run_seed=first.seed, **shared_data)
    dm.prepare_data()
    dm.setup("fit")
    trainer_kw["max_epochs"] = max(_max_epochs(spec) for spec in specs)
    lives = [Lifecycle(spec, trial) for spec, trial in zip(specs, trials, strict=True)]
    together = [t.number for t in trials if t is not None]
    for trial in trials:  # which trials trained in one Trainer (report, list, tests)
        if trial is not None:
            trial.set_user_attr(POPULATION_ATTR, together)
    members: list[Member] = []
    module: PopulationModule | None = None
    try:
        for spec, life, its_probes in zip(specs, lives, probes, strict=True):
            members.append(_member(spec, life, its_probes, dm, trainer_kw, wandb_mode, len(specs)))
        stack = StackedModels([m.model for m in members])
        L.seed_everything(first.seed, workers=True, verbose=False)
        val = _limited(dm.val_dataloader(), trainer_kw.pop("limit_val_batches", None))
        module = PopulationModule(members, stack, dm, _regrouped(val, len(specs)))
        trainer = build_trainer(
            trainer_kw,
            callbacks=[SwallowedInterrupt()],
            logger=False,
            # PopulationModule validates every member itself, and writes their checkpoints
            limit_val_batches=0,
            enable_checkpointing=False,
        )
        # Each member its own batch order, as alone (one loader when they share a seed); a
        # user's datamodule serves one order to all.
        seeds = [spec.seed for spec in specs]
        if len(set(seeds)) > 1 and isinstance(dm, ArrayDataModule):
            train = dm.member_train_dataloader(seeds)
        else:
            train = dm.train_dataloader()
        interruptible(trainer, trainer.fit, module, train_dataloaders=train)
        for i, m in enumerate(members):
            if i not in module.results:
                module.results[i] = m.finish(dm)
    except Exception as exc:  # every member not yet told fails with the error
        return [life.finish(checkpoint=None, error=error_text(exc)) for life in lives]
    except BaseException as exc:  # Ctrl-C: the same, then the caller stops
        for life in lives:
            life.finish(checkpoint=None, error=error_text(exc))
        raise
    return [module.results[i] for i in range(len(specs))]


def _member(
    spec: TrialSpec,
    life: Lifecycle,
    probes: list[Any],
    dm: L.LightningDataModule,
    trainer_kw: dict[str, Any],
    wandb_mode: str,
    size: int,
) -> Member:
    """Build one member as its run on its own would: its seed, then its model."""
    model_kw, data_kw, _ = split_params(spec.fixed, spec.params)
    max_epochs = _max_epochs(spec)
    L.seed_everything(spec.seed, workers=True, verbose=False)
    facts = model_facts(spec.fixed, dm)
    if isinstance(dm, ArrayDataModule):  # its own normalization (`stack.SCALINGS`)
        facts["normalize"] = data_kw.get("normalize", facts["normalize"])
    model = create_model(spec.fixed.model.name, **facts, **model_kw)
    if isinstance(dm, ArrayDataModule):
        model.pipeline.load_statistics(dm.input_statistics(model.hp.normalize)[1])
        augment = dm.augmenter_for(data_kw.get("augment"))
        data_kw = {"split_seed": spec.config.seed, **data_kw}
    else:  # a user's normalizes nothing; regzoo augments its batches
        augment = member_augmenter(dm, data_kw.get("augment"), name=spec.fixed.data.name)
    spec.run_dir.mkdir(parents=True, exist_ok=False)
    config = run_config(spec, model, data_kw, {**trainer_kw, "max_epochs": max_epochs})
    config["population"] = {"size": size}  # its batch order is its own seed's, as alone
    life.wandb = run_logger(spec.config, spec.run_name, config, mode=wandb_mode, concurrent=True)
    if life.trial is not None:
        for key, value in tracking.run_attrs(life.wandb).items():
            life.trial.set_user_attr(key, value)
    return Member(
        spec=spec,
        life=life,
        model=model,
        augment=augment,
        csv=CSVLogger(spec.run_dir, name="", version=""),
        max_epochs=max_epochs,
        probes=probes,
    )


def _max_epochs(spec: TrialSpec) -> int:
    """The member's own `max_epochs`: its params' over its config's."""
    return int(split_params(spec.config, spec.params)[2]["max_epochs"])


def _limited(loader: Iterable[Any], limit: int | float | None) -> list[Any]:
    """The batches Lightning's `limit_val_batches` keeps: a count (int) or a share (float) of
    them, at least one; all with None."""
    batches = list(loader)
    if limit is None:
        return batches
    keep = limit if isinstance(limit, int) else max(1, int(len(batches) * limit))
    return batches[:keep]


# The most input values (members x samples x values per sample) one validation batch holds.
VAL_VALUES = 1 << 20


def _regrouped(batches: list[Any], members: int) -> list[Any]:
    """The validation samples in as few batches as `VAL_VALUES` allows (at least the loader's
    own): every member sees the same samples, and each batch costs a pass of Python and kernel
    launches that does not depend on its size (13 batches of 25 digits a member-epoch, where
    one holds them all). The sums the metrics are made of do not change, but for rounding."""
    if len(batches) < 2:
        return batches
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    size = max(len(batches[0][1]), VAL_VALUES // (members * x[0].numel()))
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
